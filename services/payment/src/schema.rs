diesel::table! {
    accounts (customer_id) {
        customer_id -> Text,
        balance_minor -> Int8,
        currency -> Text,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    payments (order_id) {
        order_id -> Uuid,
        payment_id -> Uuid,
        customer_id -> Nullable<Text>,
        amount_minor -> Nullable<Int8>,
        currency -> Nullable<Text>,
        status -> Text,
        failure_reason -> Nullable<Text>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::allow_tables_to_appear_in_same_query!(accounts, payments);
