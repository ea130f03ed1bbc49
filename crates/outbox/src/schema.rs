diesel::table! {
    outbox (id) {
        id -> Int8,
        message_id -> Uuid,
        topic -> Text,
        message_key -> Text,
        message_type -> Text,
        headers -> Jsonb,
        payload -> Bytea,
        created_at -> Timestamptz,
    }
}
