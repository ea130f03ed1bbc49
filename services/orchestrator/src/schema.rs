diesel::table! {
    sagas (order_id) {
        order_id -> Uuid,
        customer_id -> Text,
        items -> Jsonb,
        shipping_address -> Jsonb,
        total_minor -> Nullable<Int8>,
        total_currency -> Nullable<Text>,
        phase -> Text,
        phase_step -> Nullable<Text>,
        stuck_phase -> Nullable<Text>,
        completed -> Array<Text>,
        compensated -> Array<Text>,
        failure -> Nullable<Text>,
        attempts -> Int4,
        deadline -> Nullable<Timestamptz>,
        trace_id -> Nullable<Text>,
        trace_headers -> Jsonb,
        step_started_at -> Timestamptz,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    saga_steps (id) {
        id -> Int8,
        order_id -> Uuid,
        name -> Text,
        outcome -> Text,
        reason -> Nullable<Text>,
        at -> Timestamptz,
    }
}

diesel::joinable!(saga_steps -> sagas (order_id));
diesel::allow_tables_to_appear_in_same_query!(sagas, saga_steps);
