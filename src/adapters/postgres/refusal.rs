//! What a failed database call blames, read from PostgreSQL's answer, and a description of a
//! refusal that is safe to log, to count and to attach to a dead letter.
//!
//! The write path needs three answers, not two. A call that got no answer (a lost
//! connection, a deadline, the pool) blames the database's reachability. A refusal that
//! retrying may clear (a serialization failure, a deadlock, a full disk, a read-only
//! primary during a failover) blames the database's state. Any other refusal (a constraint,
//! a trigger, a missing table or column, a permission) may blame some rows or the database
//! itself: the SQLSTATE alone cannot tell a CHECK that one poison row breaks from a CHECK a
//! bad migration added that every row breaks. The write path tells them apart by isolation
//! (`crate::pipeline::write`), and this module only reports what PostgreSQL said.

use std::fmt;

/// Whose fault a failed call is, as far as PostgreSQL's answer says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Blame {
    /// No answer: the connection was refused or lost, a deadline passed, the pool had no
    /// connection. Retried.
    Unreachable,
    /// An answer that retrying may change: the database is busy, short of resources,
    /// shutting down or read-only for now. Retried.
    Busy(Refusal),
    /// A refusal of the statement for what it writes or where it writes it. Only isolation
    /// tells whether the rows or the database are at fault.
    Refused(Refusal),
}

/// PostgreSQL's refusal of a statement, reduced to what never quotes a row's value: the
/// SQLSTATE, the names of the table, column, constraint and type it names, and its message
/// where messages of that SQLSTATE class never hold values. Two refusals are alike when
/// these are equal: the same constraint refusing many rows is one refusal.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Refusal {
    pub sqlstate: String,
    pub table: Option<String>,
    pub column: Option<String>,
    pub constraint: Option<String>,
    pub datatype: Option<String>,
    /// PostgreSQL's primary message, only for classes whose messages never quote a value.
    pub message: Option<String>,
}

/// SQLSTATE classes whose refusals retrying can clear: 08 connection exception, 40
/// transaction rollback (serialization failure, deadlock), 53 insufficient resources (disk
/// full, out of memory, too many connections), 57 operator intervention (query canceled,
/// shutting down), 58 system error (I/O error).
const BUSY_CLASSES: [&str; 5] = ["08", "40", "53", "57", "58"];
/// Single SQLSTATEs outside those classes that retrying can clear: 55P03 lock not
/// available, 55006 object in use, 25006 read-only transaction (a primary that became a
/// standby in a failover, until the connection reaches the new primary).
const BUSY_CODES: [&str; 3] = ["55P03", "55006", "25006"];
/// SQLSTATE classes whose primary messages name objects, never values: 23 integrity
/// constraint violation ("violates check constraint \"c\""; the values are in DETAIL,
/// which is never read), 42 syntax or access rule violation ("relation \"t\" does not
/// exist"), 25 invalid transaction state, 54 program limit exceeded, 55 object not in
/// prerequisite state, and the busy classes. Class 22 (data exception) is not among them:
/// `invalid input syntax for type integer: "…"` quotes the value; nor is P0 (PL/pgSQL),
/// whose RAISE messages say whatever a trigger's author wrote.
const PLAIN_MESSAGE_CLASSES: [&str; 10] =
    ["08", "23", "25", "40", "42", "53", "54", "55", "57", "58"];

impl Blame {
    /// The blame of PostgreSQL's answer `db`.
    pub fn of(db: &tokio_postgres::error::DbError) -> Self {
        let refusal = Refusal::of(db);
        let code = refusal.sqlstate.as_str();
        let class = code.get(..2).unwrap_or(code);
        if BUSY_CLASSES.contains(&class) || BUSY_CODES.contains(&code) {
            Self::Busy(refusal)
        } else {
            Self::Refused(refusal)
        }
    }
}

impl Refusal {
    pub fn of(db: &tokio_postgres::error::DbError) -> Self {
        let sqlstate = db.code().code().to_owned();
        let class = sqlstate.get(..2).unwrap_or_default();
        let message = PLAIN_MESSAGE_CLASSES
            .contains(&class)
            .then(|| db.message().to_owned());
        Self {
            table: db.table().map(str::to_owned),
            column: db.column().map(str::to_owned),
            constraint: db.constraint().map(str::to_owned),
            datatype: db.datatype().map(str::to_owned),
            message,
            sqlstate,
        }
    }
}

/// One line: `new row for relation "t" violates check constraint "c" (SQLSTATE 23514,
/// constraint c, table t)`, or `SQLSTATE P0001, its message withheld: it may quote a value`.
impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.message {
            Some(message) => write!(f, "{message} (SQLSTATE {}", self.sqlstate)?,
            None => write!(
                f,
                "SQLSTATE {} (its message withheld: it may quote a value",
                self.sqlstate
            )?,
        }
        let named = [
            ("constraint", &self.constraint),
            ("table", &self.table),
            ("column", &self.column),
            ("type", &self.datatype),
        ];
        for (what, name) in named {
            if let Some(name) = name {
                write!(f, "; {what} {name}")?;
            }
        }
        f.write_str(")")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(sqlstate: &str, message: Option<&str>) -> Refusal {
        Refusal {
            sqlstate: sqlstate.to_owned(),
            table: Some("user_logins".to_owned()),
            column: None,
            constraint: Some("no_toasters".to_owned()),
            datatype: None,
            message: message.map(str::to_owned),
        }
    }

    #[test]
    fn a_refusal_reads_on_one_line_with_the_names_it_has() {
        let text = refusal(
            "23514",
            Some("new row for relation \"user_logins\" violates check constraint \"no_toasters\""),
        )
        .to_string();
        assert_eq!(
            text,
            "new row for relation \"user_logins\" violates check constraint \"no_toasters\" \
             (SQLSTATE 23514; constraint no_toasters; table user_logins)"
        );
        let withheld = refusal("P0001", None).to_string();
        assert_eq!(
            withheld,
            "SQLSTATE P0001 (its message withheld: it may quote a value; constraint no_toasters; \
             table user_logins)"
        );
    }

    #[test]
    fn messages_are_kept_only_for_classes_that_never_quote_values() {
        for class in PLAIN_MESSAGE_CLASSES {
            assert_ne!(class, "22", "data exceptions quote the value");
            assert!(!class.starts_with('P'), "RAISE says anything");
        }
    }
}
