diesel::table! {
    orders (id) {
        id -> Uuid,
        customer_id -> Text,
        status -> Text,
        rejection_reason -> Nullable<Text>,
        ship_recipient -> Text,
        ship_line1 -> Text,
        ship_line2 -> Text,
        ship_city -> Text,
        ship_postal_code -> Text,
        ship_country_code -> Text,
        idempotency_key -> Nullable<Text>,
        trace_id -> Nullable<Text>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    order_items (order_id, line_no) {
        order_id -> Uuid,
        line_no -> Int4,
        product_id -> Text,
        quantity -> Int4,
    }
}

diesel::table! {
    order_status_history (id) {
        id -> Int8,
        order_id -> Uuid,
        status -> Text,
        reason -> Nullable<Text>,
        at -> Timestamptz,
    }
}

diesel::joinable!(order_items -> orders (order_id));
diesel::joinable!(order_status_history -> orders (order_id));
diesel::allow_tables_to_appear_in_same_query!(orders, order_items, order_status_history);
