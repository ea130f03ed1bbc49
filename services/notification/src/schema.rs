diesel::table! {
    notifications (id) {
        id -> Uuid,
        order_id -> Uuid,
        customer_id -> Text,
        outcome -> Text,
        reason -> Text,
        delivery_state -> Text,
        attempts -> Int4,
        last_error -> Nullable<Text>,
        next_attempt_at -> Timestamptz,
        claim_token -> Nullable<Uuid>,
        trace_context -> Jsonb,
        created_at -> Timestamptz,
        delivered_at -> Nullable<Timestamptz>,
    }
}
