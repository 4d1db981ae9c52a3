//! Identifiers: `local@domain`, normalised by current internationalisation practice
//! (RFC 2779 4.1.6): the local part with the PRECIS `UsernameCaseMapped` profile
//! (RFC 8265), the domain with IDNA (UTS #46, non-transitional) to its ASCII form.
//!
//! Two addresses are the same principal exactly when their normalised forms are equal
//! byte for byte; the gateway normalises every identifier it is given, so peers may send
//! any equivalent spelling.

use std::fmt;
use std::string::{String, ToString};

use precis_profiles::UsernameCaseMapped;
use precis_profiles::precis_core::profile::Profile;

use crate::limits::NAME_MAX;

/// A normalised `local@domain` identifier of a presentity, watcher or instant inbox.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Address {
    full: String,
    at: usize,
}

/// Why a string is not an address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// No `@`, or nothing on one side of it.
    #[error("an address has the form local@domain")]
    Shape,
    /// The local part is not allowed by PRECIS UsernameCaseMapped.
    #[error("the local part is not a valid PRECIS username")]
    Local,
    /// The domain is not a valid internationalised domain name.
    #[error("the domain is not a valid domain name")]
    Domain,
    /// Longer than the protocol allows.
    #[error("an address is at most {NAME_MAX} bytes")]
    TooLong,
}

impl Address {
    /// Parses and normalises an address.
    pub fn parse(input: &str) -> Result<Self, AddressError> {
        let (local, domain) = input.split_once('@').ok_or(AddressError::Shape)?;
        if local.is_empty() || domain.is_empty() {
            return Err(AddressError::Shape);
        }
        let local = UsernameCaseMapped::new()
            .enforce(local)
            .map_err(|_| AddressError::Local)?;
        if local.contains('@') {
            return Err(AddressError::Local);
        }
        let domain = normalise_domain(domain)?;
        let full = [local.as_ref(), "@", &domain].concat();
        if full.len() > NAME_MAX {
            return Err(AddressError::TooLong);
        }
        Ok(Self {
            at: local.len(),
            full,
        })
    }

    /// The local part.
    pub fn local(&self) -> &str {
        &self.full[..self.at]
    }

    /// The domain, in ASCII (A-label) form.
    pub fn domain(&self) -> &str {
        &self.full[self.at + 1..]
    }

    /// The whole normalised address.
    pub fn as_str(&self) -> &str {
        &self.full
    }

    /// The address as an owned string.
    pub fn into_string(self) -> String {
        self.full
    }
}

/// Normalises a domain name to lower-case ASCII (A-labels), without a trailing dot.
pub fn normalise_domain(domain: &str) -> Result<String, AddressError> {
    let domain = domain.strip_suffix('.').unwrap_or(domain);
    let ascii = idna::domain_to_ascii_strict(domain).map_err(|_| AddressError::Domain)?;
    if ascii.is_empty() || ascii.len() > 253 {
        return Err(AddressError::Domain);
    }
    Ok(ascii.to_string())
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

impl std::str::FromStr for Address {
    type Err = AddressError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl AsRef<str> for Address {
    fn as_ref(&self) -> &str {
        &self.full
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_and_width_fold_to_one_principal() {
        let a = Address::parse("Alice@Example.COM").unwrap();
        assert_eq!(a.as_str(), "alice@example.com");
        // Fullwidth letters map to their ASCII forms under UsernameCaseMapped.
        let b = Address::parse("\u{ff21}lice@example.com").unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn international_domain_becomes_a_label() {
        let a = Address::parse("jörg@Bücher.example").unwrap();
        assert_eq!(a.domain(), "xn--bcher-kva.example");
        assert_eq!(a.local(), "jörg");
    }

    #[test]
    fn rejects_bad_shapes() {
        for bad in [
            "",
            "alice",
            "@example.com",
            "alice@",
            "a b@example.com",
            "a@b@c",
        ] {
            assert!(Address::parse(bad).is_err(), "{bad:?} should be rejected");
        }
        let long = "a".repeat(300) + "@example.com";
        assert!(Address::parse(&long).is_err());
    }
}
