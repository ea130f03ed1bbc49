DROP TABLE order_status_history;
DROP TABLE order_items;
DROP TABLE orders;
