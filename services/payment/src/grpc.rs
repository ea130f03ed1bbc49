//! The gRPC edge: parses requests into domain types, calls the application
//! layer, and maps results and errors back to proto and `tonic::Status`.

use domain_types::{PageSize, parse_page_token};
use proto::payment::v1 as api;
use service_kit::grpc::timestamp;
use service_kit::status::{
    ErrorKind, FieldViolation, Violations, customer_page, invalid_argument as invalid,
    invalid_field, to_status,
};
use tonic::{Request, Response, Status};

use crate::app::{AppError, Payments};
use crate::domain::{
    Account, Currency, CustomerId, Money, NewAccount, OrderId, PageCursor, Payment, PaymentStatus,
    TopUp,
};

pub struct PaymentApi {
    payments: Payments,
}

impl PaymentApi {
    pub fn new(payments: Payments) -> Self {
        Self { payments }
    }
}

#[tonic::async_trait]
impl api::payment_service_server::PaymentService for PaymentApi {
    async fn create_account(
        &self,
        request: Request<api::CreateAccountRequest>,
    ) -> Result<Response<api::Account>, Status> {
        let new = NewAccount::try_from(request.into_inner()).map_err(invalid)?;
        let account = self
            .payments
            .create_account(new)
            .await
            .map_err(app_status)?;
        Ok(Response::new(account_to_proto(&account)))
    }

    async fn top_up(
        &self,
        request: Request<api::TopUpRequest>,
    ) -> Result<Response<api::Account>, Status> {
        let top_up = TopUp::try_from(request.into_inner()).map_err(invalid)?;
        let account = self.payments.top_up(top_up).await.map_err(app_status)?;
        Ok(Response::new(account_to_proto(&account)))
    }

    async fn get_account(
        &self,
        request: Request<api::GetAccountRequest>,
    ) -> Result<Response<api::Account>, Status> {
        let customer_id = CustomerId::parse(&request.into_inner().customer_id)
            .map_err(|d| invalid_field("customer_id", d))?;
        let account = self
            .payments
            .get_account(&customer_id)
            .await
            .map_err(app_status)?;
        Ok(Response::new(account_to_proto(&account)))
    }

    async fn list_payments(
        &self,
        request: Request<api::ListPaymentsRequest>,
    ) -> Result<Response<api::ListPaymentsResponse>, Status> {
        let request = request.into_inner();
        let (customer_id, page_size, after) = customer_page(
            CustomerId::parse(&request.customer_id),
            PageSize::parse(request.page_size),
            parse_page_token(&request.page_token, |token| {
                PageCursor::decode(token, "ListPayments")
            }),
        )?;
        let (payments, next) = self
            .payments
            .list_payments(&customer_id, after, page_size)
            .await
            .map_err(app_status)?;
        Ok(Response::new(api::ListPaymentsResponse {
            payments: payments.iter().map(payment_to_proto).collect(),
            next_page_token: next.map(|c| c.encode()).unwrap_or_default(),
        }))
    }

    async fn get_payment(
        &self,
        request: Request<api::GetPaymentRequest>,
    ) -> Result<Response<api::Payment>, Status> {
        let order_id = OrderId::parse(&request.into_inner().order_id)
            .map_err(|d| invalid_field("order_id", d))?;
        let payment = self
            .payments
            .get_payment(order_id)
            .await
            .map_err(app_status)?;
        Ok(Response::new(payment_to_proto(&payment)))
    }
}

/// The one mapping from application errors to gRPC status.
fn app_status(error: AppError) -> Status {
    let kind = match error {
        AppError::AccountNotFound(customer_id) => {
            ErrorKind::NotFound(format!("customer {customer_id} has no account"))
        }
        AppError::PaymentNotFound(order_id) => {
            ErrorKind::NotFound(format!("order {order_id} has no payment"))
        }
        AppError::AccountExists(customer_id) => {
            ErrorKind::AlreadyExists(format!("customer {customer_id} has an account already"))
        }
        AppError::TopUp(error) => ErrorKind::FailedPrecondition(error.to_string()),
        AppError::Unavailable(cause) => ErrorKind::Unavailable(cause),
        other @ (AppError::Db(_) | AppError::Outbox(_)) => ErrorKind::Internal(other.into()),
    };
    to_status(kind)
}

/// Checks an amount field (`field` and `field.minor_units`,
/// `field.currency`), recording one violation per problem.
fn parse_money(
    v: &mut Violations,
    field: &str,
    money: Option<&api::Money>,
    check_units: fn(i64) -> Result<i64, String>,
) -> Option<Money> {
    let Some(money) = money else {
        return v.check(field, Err("is required".to_owned()));
    };
    let minor_units = v.check(
        format!("{field}.minor_units"),
        check_units(money.minor_units),
    );
    let currency = v.check(
        format!("{field}.currency"),
        Currency::parse(&money.currency),
    );
    Some(Money::new(minor_units?, currency?))
}

/// Collects every violation of the request, not just the first.
impl TryFrom<api::CreateAccountRequest> for NewAccount {
    type Error = Vec<FieldViolation>;

    fn try_from(request: api::CreateAccountRequest) -> Result<Self, Self::Error> {
        let mut v = Violations::new();
        let customer_id = v.check("customer_id", CustomerId::parse(&request.customer_id));
        let initial_balance = parse_money(
            &mut v,
            "initial_balance",
            request.initial_balance.as_ref(),
            Money::check_non_negative,
        );
        match (customer_id, initial_balance) {
            (Some(customer_id), Some(initial_balance)) if v.is_empty() => Ok(NewAccount {
                customer_id,
                initial_balance,
            }),
            _ => Err(v.into_vec()),
        }
    }
}

/// Collects every violation of the request, not just the first.
impl TryFrom<api::TopUpRequest> for TopUp {
    type Error = Vec<FieldViolation>;

    fn try_from(request: api::TopUpRequest) -> Result<Self, Self::Error> {
        let mut v = Violations::new();
        let customer_id = v.check("customer_id", CustomerId::parse(&request.customer_id));
        let amount = parse_money(
            &mut v,
            "amount",
            request.amount.as_ref(),
            Money::check_positive,
        );
        match (customer_id, amount) {
            (Some(customer_id), Some(amount)) if v.is_empty() => Ok(TopUp {
                customer_id,
                amount,
            }),
            _ => Err(v.into_vec()),
        }
    }
}

fn money_to_proto(money: &Money) -> api::Money {
    api::Money {
        minor_units: money.minor_units(),
        currency: money.currency().as_str().to_owned(),
    }
}

fn account_to_proto(account: &Account) -> api::Account {
    api::Account {
        customer_id: account.customer_id.as_str().to_owned(),
        balance: Some(money_to_proto(&account.balance)),
        created_at: Some(timestamp(account.created_at)),
        updated_at: Some(timestamp(account.updated_at)),
    }
}

fn status_to_proto(status: PaymentStatus) -> api::PaymentStatus {
    match status {
        PaymentStatus::Charged => api::PaymentStatus::Charged,
        PaymentStatus::Refunded => api::PaymentStatus::Refunded,
        PaymentStatus::Declined(_) => api::PaymentStatus::Declined,
        PaymentStatus::Tombstone => api::PaymentStatus::Tombstone,
    }
}

fn payment_to_proto(payment: &Payment) -> api::Payment {
    api::Payment {
        payment_id: payment.payment_id.to_string(),
        order_id: payment.order_id.to_string(),
        customer_id: payment
            .customer_id
            .as_ref()
            .map(|c| c.as_str().to_owned())
            .unwrap_or_default(),
        amount: payment.amount.as_ref().map(money_to_proto),
        status: status_to_proto(payment.status).into(),
        failure_reason: payment
            .status
            .reason()
            .map(|r| r.as_str().to_owned())
            .unwrap_or_default(),
        created_at: Some(timestamp(payment.created_at)),
        updated_at: Some(timestamp(payment.updated_at)),
    }
}
