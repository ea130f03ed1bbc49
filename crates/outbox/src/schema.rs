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

diesel::table! {
    outbox_parked (id) {
        id -> Int8,
        message_id -> Uuid,
        topic -> Text,
        message_key -> Text,
        message_type -> Text,
        headers -> Jsonb,
        payload -> Bytea,
        created_at -> Timestamptz,
        error -> Text,
        held_behind -> Nullable<Int8>,
        parked_at -> Timestamptz,
    }
}

diesel::allow_tables_to_appear_in_same_query!(outbox, outbox_parked);
