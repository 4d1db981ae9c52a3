//! Operator provisioning of principals: add (with a fresh access token), list, remove.
//!
//! Works on the database in the data directory directly, so it may run while the
//! gateway runs (SQLite arbitrates): a new principal can log in at once. A removed
//! principal's live sessions keep running until they disconnect; it cannot log in again.
//!
//! Owns token generation: 32 random bytes from the operating system's generator, handed
//! out once as 64 hex digits; only their hash ([`tern_gateway_core::auth::hash_token`])
//! is stored. It does not check addresses against the configured domains (the gateway
//! does that at `Hello`); the caller may warn. It does keep the names of unauthenticated
//! peers free: no principal or alias may have the local part `anonymous` or one starting
//! with `anonymous+` ([`is_reserved`]).

use std::path::Path;

use serde::Serialize;
use tern_gateway_core::auth::hash_token;
use tern_gateway_core::{Store, StoreError, UserRecord};
use tern_wire::addr::{Address, AddressError};

use crate::runtime::unix_ms;
use crate::sqlite::{DbError, SqliteStore};

/// What a new principal gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserOptions {
    /// Whether it has a presentity. Default true.
    pub presentity: bool,
    /// Whether it has an instant inbox at its own address. Default true.
    pub inbox: bool,
    /// Further addresses that deliver to its inbox.
    pub aliases: Vec<String>,
}

impl Default for UserOptions {
    fn default() -> Self {
        Self {
            presentity: true,
            inbox: true,
            aliases: Vec::new(),
        }
    }
}

/// A principal as listed to the operator; never its token hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserInfo {
    /// Normalised address.
    pub address: String,
    /// Whether it has a presentity.
    pub presentity: bool,
    /// Whether it has an inbox at its own address.
    pub inbox: bool,
    /// Further inbox addresses.
    pub aliases: Vec<String>,
    /// When it was provisioned, Unix milliseconds.
    pub created: u64,
}

/// Why a provisioning command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UsersError {
    /// The address (or an alias) is not a valid `local@domain`.
    #[error("{input:?}: {source}")]
    Address {
        /// What was given.
        input: String,
        /// Why it is invalid.
        source: AddressError,
    },
    /// The principal already exists.
    #[error("{0} already exists")]
    Exists(String),
    /// An alias outside the principal's own domain.
    #[error("alias {alias} is not in the principal's domain {domain}")]
    ForeignAlias {
        /// The alias.
        alias: String,
        /// The principal's domain.
        domain: String,
    },
    /// An address is already a principal or another principal's alias.
    #[error("{address} is already used by {owner}")]
    Taken {
        /// The address asked for.
        address: String,
        /// Who has it.
        owner: String,
    },
    /// The address (or an alias) is one the gateway gives unauthenticated peers.
    #[error(
        "{0} is reserved: the local part \"anonymous\" (and any starting with \"anonymous+\") names unauthenticated peers, so no principal or alias may have it"
    )]
    Reserved(String),
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

/// Normalises an address as the gateway does at `Hello`.
pub fn normalise(input: &str) -> Result<Address, UsersError> {
    Address::parse(input).map_err(|source| UsersError::Address {
        input: input.to_owned(),
        source,
    })
}

/// The local part of unauthenticated peers' names: they appear to others as
/// `anonymous@<domain>`, and the gateway names each one `anonymous+<session>@<domain>`
/// inside.
pub const ANONYMOUS: &str = "anonymous";

/// Whether a normalised address is reserved for unauthenticated peers: its local part
/// is `anonymous` or starts with `anonymous+`.
pub fn is_reserved(address: &Address) -> bool {
    let local = address.local();
    local == ANONYMOUS
        || local
            .strip_prefix(ANONYMOUS)
            .is_some_and(|rest| rest.starts_with('+'))
}

/// Normalises the address of a principal (or an alias) to provision: as
/// [`normalise`], and refused if it is reserved for unauthenticated peers.
pub fn normalise_new(input: &str) -> Result<Address, UsersError> {
    let address = normalise(input)?;
    if is_reserved(&address) {
        return Err(UsersError::Reserved(address.into_string()));
    }
    Ok(address)
}

/// Generates an access token: 256 random bits as 64 lower-case hex digits.
pub fn generate_token() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

enum Outcome {
    Added,
    Exists,
    Taken { address: String, owner: String },
}

/// Provisions a principal and returns its access token, which is stored nowhere: show
/// it to the operator once. Refuses an existing principal, an address in use, and a
/// reserved address ([`is_reserved`]).
pub fn add(data_dir: &Path, address: &str, opts: UserOptions) -> Result<String, UsersError> {
    let principal = normalise_new(address)?;
    let mut aliases: Vec<String> = Vec::new();
    for alias in &opts.aliases {
        let alias = normalise_new(alias)?;
        // Each domain is administered on its own (RFC 2779 2.1.4): provisioning in one
        // domain must not take names in another.
        if alias.domain() != principal.domain() {
            return Err(UsersError::ForeignAlias {
                alias: alias.into_string(),
                domain: principal.domain().to_owned(),
            });
        }
        let alias = alias.into_string();
        if alias != principal.as_str() && !aliases.contains(&alias) {
            aliases.push(alias);
        }
    }
    let address = principal.into_string();
    let token = generate_token();
    let record = UserRecord {
        address: address.clone(),
        token_hash: hash_token(&token),
        presentity: opts.presentity,
        inbox: opts.inbox,
        aliases,
        created: unix_ms(),
    };
    let mut store = SqliteStore::open(data_dir)?;
    match store.write(|s| add_in(s, &record))? {
        Outcome::Added => Ok(token),
        Outcome::Exists => Err(UsersError::Exists(address)),
        Outcome::Taken { address, owner } => Err(UsersError::Taken { address, owner }),
    }
}

fn add_in(s: &mut dyn Store, record: &UserRecord) -> Result<Outcome, StoreError> {
    if s.user(&record.address)?.is_some() {
        return Ok(Outcome::Exists);
    }
    for address in std::iter::once(&record.address).chain(&record.aliases) {
        let owner = match s.user(address)? {
            Some(user) => Some(user.address),
            None => s.inbox_owner(address)?,
        };
        if let Some(owner) = owner {
            return Ok(Outcome::Taken {
                address: address.clone(),
                owner,
            });
        }
    }
    s.put_user(record)?;
    Ok(Outcome::Added)
}

/// Every principal, ordered by address.
pub fn list(data_dir: &Path) -> Result<Vec<UserInfo>, UsersError> {
    let store = SqliteStore::open(data_dir)?;
    let users = store.read(|s| s.users())?;
    Ok(users
        .into_iter()
        .map(|u| UserInfo {
            address: u.address,
            presentity: u.presentity,
            inbox: u.inbox,
            aliases: u.aliases,
            created: u.created,
        })
        .collect())
}

/// Removes a principal with its presence, subscriptions, inbox and aliases; false if
/// there was none.
pub fn remove(data_dir: &Path, address: &str) -> Result<bool, UsersError> {
    let address = normalise(address)?;
    let mut store = SqliteStore::open(data_dir)?;
    Ok(store.write(|s| s.remove_user(address.as_str()))?)
}

#[cfg(test)]
mod tests {
    use tern_gateway_core::auth::verify_token;

    use super::*;

    #[test]
    fn add_stores_only_the_hash_of_a_fresh_token() {
        let dir = tempfile::tempdir().unwrap();
        let token = add(dir.path(), "Alice@Example.com", UserOptions::default()).unwrap();
        assert_eq!(token.len(), 64);
        assert!(token.bytes().all(|b| b.is_ascii_hexdigit()));
        let store = SqliteStore::open(dir.path()).unwrap();
        let user = store
            .read(|s| s.user("alice@example.com"))
            .unwrap()
            .unwrap();
        assert!(verify_token(&token, &user.token_hash));
        assert!(user.presentity && user.inbox);
        let other = add(dir.path(), "bob@example.com", UserOptions::default()).unwrap();
        assert_ne!(token, other);
    }

    #[test]
    fn an_alias_must_be_in_the_principals_own_domain() {
        let dir = tempfile::tempdir().unwrap();
        let opts = UserOptions {
            aliases: vec!["desk@other.example".into()],
            ..UserOptions::default()
        };
        let err = add(dir.path(), "alice@example.com", opts).unwrap_err();
        assert!(matches!(err, UsersError::ForeignAlias { .. }), "{err}");
        assert!(
            list(dir.path()).unwrap().is_empty(),
            "nothing was provisioned"
        );
    }

    #[test]
    fn add_refuses_duplicates_and_taken_aliases() {
        let dir = tempfile::tempdir().unwrap();
        let opts = UserOptions {
            aliases: vec!["Al@example.com".into()],
            ..UserOptions::default()
        };
        add(dir.path(), "alice@example.com", opts).unwrap();
        assert!(matches!(
            add(dir.path(), "ALICE@example.com", UserOptions::default()),
            Err(UsersError::Exists(a)) if a == "alice@example.com"
        ));
        let taken = UserOptions {
            aliases: vec!["al@example.com".into()],
            ..UserOptions::default()
        };
        assert!(matches!(
            add(dir.path(), "bob@example.com", taken),
            Err(UsersError::Taken { owner, .. }) if owner == "alice@example.com"
        ));
        assert!(matches!(
            add(dir.path(), "al@example.com", UserOptions::default()),
            Err(UsersError::Taken { .. })
        ));
        assert!(matches!(
            add(dir.path(), "not an address", UserOptions::default()),
            Err(UsersError::Address { .. })
        ));
    }

    #[test]
    fn anonymous_names_are_reserved() {
        let dir = tempfile::tempdir().unwrap();
        for reserved in [
            "anonymous@example.com",
            "Anonymous@Example.com",
            "ANONYMOUS@example.com",
            "anonymous+1@example.com",
            "anonymous+@example.com",
        ] {
            let err = add(dir.path(), reserved, UserOptions::default()).unwrap_err();
            assert!(matches!(err, UsersError::Reserved(_)), "{reserved}: {err}");
            assert!(err.to_string().contains("reserved"), "{err}");
        }
        let as_alias = UserOptions {
            aliases: vec!["anonymous@example.com".into()],
            ..UserOptions::default()
        };
        assert!(matches!(
            add(dir.path(), "alice@example.com", as_alias),
            Err(UsersError::Reserved(a)) if a == "anonymous@example.com"
        ));
        assert!(list(dir.path()).unwrap().is_empty(), "nothing was added");
        // Only the exact local part and its `+` form: lookalikes are ordinary names.
        for fine in [
            "anonymously@example.com",
            "anonymous-coward@example.com",
            "not.anonymous@example.com",
            "anon@example.com",
        ] {
            add(dir.path(), fine, UserOptions::default()).unwrap();
        }
        assert_eq!(list(dir.path()).unwrap().len(), 4);
    }

    #[test]
    fn list_and_remove() {
        let dir = tempfile::tempdir().unwrap();
        let opts = UserOptions {
            presentity: false,
            inbox: true,
            aliases: vec!["b@example.com".into(), "b@example.com".into()],
        };
        add(dir.path(), "bob@example.com", opts).unwrap();
        add(dir.path(), "alice@example.com", UserOptions::default()).unwrap();
        let users = list(dir.path()).unwrap();
        assert_eq!(
            users.iter().map(|u| u.address.as_str()).collect::<Vec<_>>(),
            ["alice@example.com", "bob@example.com"]
        );
        assert_eq!(users[1].aliases, ["b@example.com"]);
        assert!(!users[1].presentity);
        let json = serde_json::to_string(&users[1]).unwrap();
        assert!(!json.contains("token"));
        assert!(remove(dir.path(), "Bob@example.com").unwrap());
        assert!(!remove(dir.path(), "bob@example.com").unwrap());
        assert_eq!(list(dir.path()).unwrap().len(), 1);
    }
}
