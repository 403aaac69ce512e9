//! PostgreSQL: reading through binary COPY (`read`), the wire format's
//! types and decoding into Arrow (`decode`), encoding Arrow for binary
//! COPY into a table (`encode`) and the SQL load that does it (`load`),
//! and splitting a table's heap into block ranges for partitioned reads
//! (`blocks`).

pub(crate) mod blocks;
pub(crate) mod decode;
pub(crate) mod encode;
mod load;
mod read;

pub(crate) use load::load;
pub(crate) use read::extract;

#[cfg(test)]
mod roundtrip_tests;
