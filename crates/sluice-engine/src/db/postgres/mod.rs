//! PostgreSQL: reading through binary COPY (`read`), the wire format's
//! types and decoding into Arrow (`decode`), encoding Arrow for binary
//! COPY into a table (`encode`, used by the SQL load), and splitting a
//! table's heap into block ranges for partitioned reads (`blocks`).

pub(crate) mod blocks;
pub(crate) mod decode;
pub(crate) mod encode;
mod read;

pub(crate) use read::extract;

#[cfg(test)]
mod roundtrip_tests;
