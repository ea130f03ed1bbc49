#!/usr/bin/env bash
# Seeds demo products and customer accounts through the inventory and payment gRPC APIs
# of a running stack (scripts/stack.sh up). Safe to run again: what exists is kept.
#
#   scripts/seed.sh            (make seed)
#
# Products (EUR): sku-widget 12.50 x100, sku-gadget 49.99 x20, sku-empty 5.00 x0,
# sku-piano 12000.00 x5 (over the default per-payment limit).
# Accounts (EUR): customer-1 500.00, customer-poor 5.00, customer-rich 100000.00.
set -euo pipefail

CACHE="${ORDERSAGA_CACHE:-$HOME/.cache/ordersaga}"
GRPCURL="${GRPCURL:-$CACHE/bin/grpcurl}"
INVENTORY_ADDR="${INVENTORY_ADDR:-127.0.0.1:50052}"
PAYMENT_ADDR="${PAYMENT_ADDR:-127.0.0.1:50053}"

[[ -x "$GRPCURL" ]] || { echo "grpcurl not found at $GRPCURL -- run scripts/infra.sh install" >&2; exit 1; }

# Calls METHOD on ADDR with JSON BODY; an AlreadyExists answer counts as done.
call() {
  local addr="$1" method="$2" body="$3" out
  if out="$("$GRPCURL" -plaintext -max-time 10 -d "$body" "$addr" "$method" 2>&1)"; then
    return 0
  fi
  if grep -q 'AlreadyExists' <<<"$out"; then
    return 0
  fi
  printf 'seed: %s failed:\n%s\n' "$method" "$out" >&2
  return 1
}

product() {
  call "$INVENTORY_ADDR" ordersaga.inventory.v1.InventoryService/CreateProduct \
    "{\"product_id\":\"$1\",\"name\":\"$2\",\"description\":\"$3\",\"unit_price\":{\"minor_units\":$4,\"currency\":\"EUR\"},\"stock\":$5}"
  echo "product $1 ($2): $5 in stock at $4 EUR cents"
}

account() {
  call "$PAYMENT_ADDR" ordersaga.payment.v1.PaymentService/CreateAccount \
    "{\"customer_id\":\"$1\",\"initial_balance\":{\"minor_units\":$2,\"currency\":\"EUR\"}}"
  echo "account $1: $2 EUR cents"
}

product sku-widget "Widget" "A dependable widget" 1250 100
product sku-gadget "Gadget" "A gadget with many uses" 4999 20
product sku-empty "Sold-out item" "Always out of stock" 500 0
product sku-piano "Grand piano" "Dearer than one payment may be" 1200000 5
account customer-1 50000
account customer-poor 500
account customer-rich 10000000
