diesel::table! {
    shipments (order_id) {
        order_id -> Uuid,
        status -> Text,
        shipment_id -> Nullable<Uuid>,
        tracking_number -> Nullable<Text>,
        failure_reason -> Nullable<Text>,
        ship_recipient -> Nullable<Text>,
        ship_line1 -> Nullable<Text>,
        ship_line2 -> Nullable<Text>,
        ship_city -> Nullable<Text>,
        ship_postal_code -> Nullable<Text>,
        ship_country_code -> Nullable<Text>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}
