//! A tiny SQL builder that numbers `$N` placeholders.
//!
//! sqlx's `QueryBuilder<Any>` emits `?`, which PostgreSQL rejects. `$N` works on both engines:
//! PostgreSQL natively, and SQLite treats `$N` as a named parameter that sqlx binds by number.
//! User values only ever enter through `push_bind`; `push` is for SQL text written in this crate.

use sqlx::any::{Any, AnyArguments};
use sqlx::query::Query;

/// A value bound to a placeholder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SqlValue {
    Text(String),
    OptionalText(Option<String>),
    Int(Option<i64>),
}

impl From<&str> for SqlValue {
    fn from(value: &str) -> Self {
        SqlValue::Text(value.to_owned())
    }
}

impl From<String> for SqlValue {
    fn from(value: String) -> Self {
        SqlValue::Text(value)
    }
}

impl From<i64> for SqlValue {
    fn from(value: i64) -> Self {
        SqlValue::Int(Some(value))
    }
}

impl From<Option<i64>> for SqlValue {
    fn from(value: Option<i64>) -> Self {
        SqlValue::Int(value)
    }
}

/// SQL text plus the values of its `$1..$N` placeholders, in order.
#[derive(Debug, Clone, Default)]
pub(crate) struct SqlBuilder {
    sql: String,
    values: Vec<SqlValue>,
}

impl SqlBuilder {
    /// Starts a statement with `sql`.
    pub(crate) fn new(sql: &str) -> Self {
        Self {
            sql: sql.to_owned(),
            values: Vec::new(),
        }
    }

    /// A statement whose `$1..$N` placeholders are already in `sql`, with their values.
    pub(crate) fn with_values<const N: usize>(sql: &str, values: [SqlValue; N]) -> Self {
        Self {
            sql: sql.to_owned(),
            values: values.into(),
        }
    }

    /// Appends SQL text written in this crate (never a user value).
    pub(crate) fn push(&mut self, sql: &str) -> &mut Self {
        self.sql.push_str(sql);
        self
    }

    /// Appends the next placeholder and records its value.
    pub(crate) fn push_bind(&mut self, value: impl Into<SqlValue>) -> &mut Self {
        let placeholder = self.bind(value);
        self.sql.push_str(&placeholder);
        self
    }

    /// Records a value and returns its placeholder (`$N`) without appending it, so that SQL
    /// using the same value several times binds it once.
    pub(crate) fn bind(&mut self, value: impl Into<SqlValue>) -> String {
        self.values.push(value.into());
        format!("${}", self.values.len())
    }

    /// Appends `(ph1, ph2, ...)` with one placeholder per value. `values` must not be empty.
    pub(crate) fn push_bind_list<V: Into<SqlValue>>(
        &mut self,
        values: impl IntoIterator<Item = V>,
    ) -> &mut Self {
        self.sql.push('(');
        for (position, value) in values.into_iter().enumerate() {
            if position > 0 {
                self.sql.push_str(", ");
            }
            self.push_bind(value);
        }
        debug_assert!(
            !self.sql.ends_with('('),
            "an IN list needs at least one value"
        );
        self.sql.push(')');
        self
    }

    /// Returns the SQL text.
    pub(crate) fn sql(&self) -> &str {
        &self.sql
    }

    /// Binds the values to a `rusqlite` statement prepared from [`SqlBuilder::sql`]. SQLite
    /// treats `$N` as a named parameter and numbers parameters in order of first appearance,
    /// so `$2` may well be its first: each is bound by its name's number, not by position.
    pub(crate) fn bind_sqlite(
        &self,
        statement: &mut rusqlite::Statement<'_>,
    ) -> rusqlite::Result<()> {
        use rusqlite::types::Value;
        for index in 1..=statement.parameter_count() {
            let value = statement
                .parameter_name(index)
                .and_then(|name| name.strip_prefix('$'))
                .and_then(|number| number.parse::<usize>().ok())
                .and_then(|number| number.checked_sub(1))
                .and_then(|position| self.values.get(position))
                .ok_or(rusqlite::Error::InvalidParameterCount(
                    index,
                    self.values.len(),
                ))?;
            let value = match value {
                SqlValue::Text(text) => Value::Text(text.clone()),
                SqlValue::OptionalText(text) => text.clone().map_or(Value::Null, Value::Text),
                SqlValue::Int(number) => number.map_or(Value::Null, Value::Integer),
            };
            statement.raw_bind_parameter(index, value)?;
        }
        Ok(())
    }

    /// Returns the bound values, in placeholder order.
    #[cfg(test)]
    pub(crate) fn values(&self) -> &[SqlValue] {
        &self.values
    }

    /// Returns a sqlx query with every value bound.
    pub(crate) fn build(&self) -> Query<'_, Any, AnyArguments<'_>> {
        let mut query = sqlx::query(&self.sql);
        for value in &self.values {
            query = match value {
                SqlValue::Text(text) => query.bind(text.as_str()),
                SqlValue::OptionalText(text) => query.bind(text.as_deref()),
                SqlValue::Int(number) => query.bind(*number),
            };
        }
        query
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_placeholders_are_numbered_in_order() {
        let mut builder = SqlBuilder::new("SELECT 1 FROM study WHERE a = ");
        builder
            .push_bind("x")
            .push(" AND b IN ")
            .push_bind_list([1_i64, 2, 3]);
        builder.push(" AND c = ").push_bind(None::<i64>);
        assert_eq!(
            builder.sql(),
            "SELECT 1 FROM study WHERE a = $1 AND b IN ($2, $3, $4) AND c = $5"
        );
        assert_eq!(builder.values.len(), 5);
        assert_eq!(builder.values[0], SqlValue::Text("x".to_owned()));
        assert_eq!(builder.values[4], SqlValue::Int(None));
    }

    #[test]
    fn test_sqlite_binds_placeholders_by_number_not_by_position() {
        let connection = rusqlite::Connection::open_in_memory().unwrap();
        let builder = SqlBuilder::with_values(
            "SELECT $3 || '-' || $1 || '-' || $2 || '-' || $1",
            ["a".into(), "b".into(), "c".into()],
        );
        let mut statement = connection.prepare(builder.sql()).unwrap();
        builder.bind_sqlite(&mut statement).unwrap();
        let mut rows = statement.raw_query();
        let joined: String = rows.next().unwrap().unwrap().get(0).unwrap();
        assert_eq!(joined, "c-a-b-a");
    }
}
