//! Paging of lists: the page size a client asks for, cutting a fetched
//! page, and the page token of a list ordered newest first.

use chrono::{DateTime, Utc};
use uuid::Uuid;

/// The page size when a request asks for none (0).
pub const DEFAULT_PAGE_SIZE: usize = 20;
/// The largest page a request may ask for.
pub const MAX_PAGE_SIZE: usize = 100;

/// How many items one page holds: 1..=100.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageSize(usize);

impl PageSize {
    /// A requested page size; 0 means the default.
    pub fn parse(raw: i32) -> Result<Self, String> {
        match raw {
            0 => Ok(Self(DEFAULT_PAGE_SIZE)),
            n => usize::try_from(n)
                .ok()
                .filter(|n| (1..=MAX_PAGE_SIZE).contains(n))
                .map(Self)
                .ok_or_else(|| {
                    format!("must be between 1 and {MAX_PAGE_SIZE}, or 0 for the default")
                }),
        }
    }

    pub fn get(self) -> usize {
        self.0
    }

    /// How many rows to fetch: one more than a page, which tells whether
    /// another page follows.
    pub fn fetch_limit(self) -> i64 {
        i64::try_from(self.0 + 1).unwrap_or(i64::MAX)
    }

    /// The page out of `rows` fetched with [`fetch_limit`](Self::fetch_limit),
    /// and, when more rows followed, the cursor of the next page made from
    /// the page's last item.
    pub fn split<T, C>(
        self,
        mut rows: Vec<T>,
        cursor: impl FnOnce(&T) -> C,
    ) -> (Vec<T>, Option<C>) {
        if rows.len() <= self.0 {
            return (rows, None);
        }
        rows.truncate(self.0);
        let next = rows.last().map(cursor);
        (rows, next)
    }
}

/// The cursor a request's page token stands for: `None` for an empty
/// token (the first page), otherwise what `decode` makes of it.
pub fn parse_page_token<C>(
    token: &str,
    decode: impl FnOnce(&str) -> Result<C, String>,
) -> Result<Option<C>, String> {
    if token.is_empty() {
        Ok(None)
    } else {
        decode(token).map(Some)
    }
}

/// Where a list ordered newest first (creation time, then id, both
/// descending) continues: the last item seen. Its page token is
/// `<microseconds since the epoch>.<uuid>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewestFirst<Id> {
    pub created_at: DateTime<Utc>,
    pub id: Id,
}

impl<Id: Copy + Into<Uuid> + From<Uuid>> NewestFirst<Id> {
    pub fn encode(&self) -> String {
        let id: Uuid = self.id.into();
        format!("{}.{id}", self.created_at.timestamp_micros())
    }

    /// A token that `list` (the RPC, e.g. `ListPayments`) returned.
    pub fn decode(token: &str, list: &str) -> Result<Self, String> {
        let invalid = || format!("is not a token returned by {list}");
        let (micros, id) = token.split_once('.').ok_or_else(invalid)?;
        let micros: i64 = micros.parse().map_err(|_| invalid())?;
        Ok(Self {
            created_at: DateTime::from_timestamp_micros(micros).ok_or_else(invalid)?,
            id: Uuid::parse_str(id).map_err(|_| invalid())?.into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::OrderId;

    #[test]
    fn a_page_size_of_zero_means_the_default_and_the_maximum_is_a_hundred() {
        assert_eq!(PageSize::parse(0).map(PageSize::get), Ok(DEFAULT_PAGE_SIZE));
        assert_eq!(PageSize::parse(1).map(PageSize::get), Ok(1));
        assert_eq!(PageSize::parse(100).map(PageSize::get), Ok(MAX_PAGE_SIZE));
        assert!(PageSize::parse(101).is_err());
        assert!(PageSize::parse(-1).is_err());
    }

    #[test]
    fn one_row_more_than_a_page_is_fetched_and_cut_off_into_the_next_cursor() {
        let size = PageSize::parse(2).expect("size");
        assert_eq!(size.fetch_limit(), 3);
        assert_eq!(
            size.split(vec![1, 2, 3], |last| *last),
            (vec![1, 2], Some(2))
        );
        assert_eq!(size.split(vec![1, 2], |last| *last), (vec![1, 2], None));
        assert_eq!(size.split(Vec::<i32>::new(), |last| *last), (vec![], None));
    }

    #[test]
    fn an_empty_page_token_asks_for_the_first_page() {
        let decode = |token: &str| token.parse::<u32>().map_err(|_| "bad".to_owned());
        assert_eq!(parse_page_token("", decode), Ok(None));
        assert_eq!(parse_page_token("7", decode), Ok(Some(7)));
        assert_eq!(parse_page_token("x", decode), Err("bad".to_owned()));
    }

    #[test]
    fn a_newest_first_cursor_round_trips_and_rejects_garbage() {
        let cursor = NewestFirst {
            created_at: DateTime::from_timestamp_micros(1_700_000_000_123_456).expect("time"),
            id: OrderId::new(),
        };
        assert_eq!(
            NewestFirst::decode(&cursor.encode(), "ListOrders"),
            Ok(cursor)
        );
        for bad in ["", "garbage", "12.not-a-uuid", "nope.0190"] {
            assert_eq!(
                NewestFirst::<OrderId>::decode(bad, "ListOrders"),
                Err("is not a token returned by ListOrders".to_owned()),
                "{bad:?}"
            );
        }
    }
}
