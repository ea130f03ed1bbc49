diesel::table! {
    products (id) {
        id -> Text,
        name -> Text,
        description -> Text,
        unit_price_minor -> Int8,
        currency -> Text,
        stock -> Int4,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    reservations (order_id) {
        order_id -> Uuid,
        status -> Text,
        failure_reason -> Nullable<Text>,
        failed_product_id -> Nullable<Text>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    reservation_lines (order_id, line_no) {
        order_id -> Uuid,
        line_no -> Int4,
        product_id -> Text,
        quantity -> Int4,
        unit_price_minor -> Int8,
        currency -> Text,
    }
}

diesel::joinable!(reservation_lines -> reservations (order_id));
diesel::joinable!(reservation_lines -> products (product_id));
diesel::allow_tables_to_appear_in_same_query!(products, reservations, reservation_lines);
