//! Bearer tokens with roles. The config holds SHA-256 hashes of tokens, never tokens; a
//! presented token is hashed and compared with every configured hash in constant time.

use crate::error::JobError;
use serde::{Deserialize, Serialize};

/// What a token may do; each role includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read features, views, the status page and metrics.
    Reader,
    /// Also run checks that read the offline store (`POST /v1/verify`).
    Writer,
    /// Everything, including the audit log.
    Admin,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Reader => "reader",
            Role::Writer => "writer",
            Role::Admin => "admin",
        })
    }
}

/// A token as the config declares it: a name (what the audit log says), a role, and the
/// SHA-256 of the token in hex, inline or in an environment variable.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Who holds it (appears in the audit log).
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// SHA-256 of the token, 64 hex digits (`quiver token` prints one).
    pub sha256: Option<String>,
    /// An environment variable holding that hash instead.
    pub sha256_env: Option<String>,
}

/// Who made a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's name, or `anonymous`.
    pub name: String,
    /// Its role.
    pub role: Role,
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// No `Authorization: Bearer` header (401).
    Missing,
    /// A token that matches none configured (401).
    Unknown,
    /// A known token whose role is not enough (403).
    Forbidden {
        /// The token's name.
        who: String,
        /// Its role.
        role: Role,
        /// The role needed.
        needed: Role,
    },
}

impl std::fmt::Display for Denied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Denied::Missing => write!(f, "no bearer token: send `Authorization: Bearer <token>`"),
            Denied::Unknown => write!(f, "the bearer token is not valid"),
            Denied::Forbidden { role, needed, .. } => {
                write!(f, "this token's role is {role}; this needs {needed}")
            }
        }
    }
}

/// The tokens a server accepts.
pub struct Auth {
    tokens: Vec<(String, Role, [u8; 32])>,
    /// The role of requests without a token, when the server allows them.
    anonymous: Option<Role>,
}

/// SHA-256 of `text`.
pub fn sha256(text: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, text);
    let mut out = [0; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

fn parse_hash(text: &str) -> Option<[u8; 32]> {
    let text = text.trim();
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut out = [0; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// Whether two hashes are equal, looking at every byte whatever the first difference.
fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b) {
        diff |= x ^ y;
    }
    std::hint::black_box(diff) == 0
}

/// A new random token (`qv_` and 64 hex digits) and the SHA-256 hex a config declares for it.
pub fn new_token() -> Result<(String, String), JobError> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| JobError::Other("the system random generator failed".into()))?;
    let token = format!("qv_{}", hex::encode(bytes));
    let hash = hex::encode(sha256(token.as_bytes()));
    Ok((token, hash))
}

impl Auth {
    /// The tokens of `configs`; without any, requests need no token when `anonymous` is given
    /// (the caller decides when that is safe: a loopback address).
    pub fn new(configs: &[TokenConfig], anonymous: Option<Role>) -> Result<Self, JobError> {
        let mut tokens = Vec::with_capacity(configs.len());
        for t in configs {
            let text = match (&t.sha256, &t.sha256_env) {
                (Some(hash), None) => hash.clone(),
                (None, Some(var)) => std::env::var(var).map_err(|_| {
                    JobError::Other(format!(
                        "token `{}`: the environment variable {var} (its sha256_env) is not set",
                        t.name
                    ))
                })?,
                _ => {
                    return Err(JobError::Other(format!(
                        "token `{}`: give exactly one of sha256 and sha256_env (`quiver token` prints a token and its hash)",
                        t.name
                    )))
                }
            };
            let hash = parse_hash(&text).ok_or_else(|| {
                JobError::Other(format!(
                    "token `{}`: its hash must be 64 hex digits (the SHA-256 of the token, as `quiver token` prints it), not the token itself",
                    t.name
                ))
            })?;
            tokens.push((t.name.clone(), t.role, hash));
        }
        Ok(Auth {
            anonymous: if tokens.is_empty() { anonymous } else { None },
            tokens,
        })
    }

    /// Whether requests need a token.
    pub fn requires_tokens(&self) -> bool {
        self.anonymous.is_none()
    }

    /// Who sent the `Authorization` header `header`, if they may do what needs `needed`.
    pub fn check(&self, header: Option<&str>, needed: Role) -> Result<Caller, Denied> {
        let caller = match (header, self.anonymous) {
            (None, Some(role)) => Caller {
                name: "anonymous".into(),
                role,
            },
            (None, None) => return Err(Denied::Missing),
            (Some(header), _) => {
                let token = header
                    .strip_prefix("Bearer ")
                    .or_else(|| header.strip_prefix("bearer "))
                    .ok_or(Denied::Missing)?
                    .trim();
                let presented = sha256(token.as_bytes());
                // Every hash is compared, so the time taken does not tell which one matched.
                let mut found = None;
                for (name, role, hash) in &self.tokens {
                    if same(&presented, hash) && found.is_none() {
                        found = Some(Caller {
                            name: name.clone(),
                            role: *role,
                        });
                    }
                }
                found.ok_or(Denied::Unknown)?
            }
        };
        if caller.role < needed {
            return Err(Denied::Forbidden {
                who: caller.name,
                role: caller.role,
                needed,
            });
        }
        Ok(caller)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(name: &str, role: Role, token: &str) -> TokenConfig {
        TokenConfig {
            name: name.into(),
            role,
            sha256: Some(hex::encode(sha256(token.as_bytes()))),
            sha256_env: None,
        }
    }

    #[test]
    fn tokens_are_matched_by_hash_and_roles_ordered() {
        let auth = Auth::new(
            &[
                config("svc", Role::Reader, "t-read"),
                config("ops", Role::Admin, "t-admin"),
            ],
            Some(Role::Admin),
        )
        .unwrap();
        assert!(
            auth.requires_tokens(),
            "configured tokens turn anonymous access off"
        );
        assert_eq!(auth.check(None, Role::Reader), Err(Denied::Missing));
        assert_eq!(
            auth.check(Some("Bearer nope"), Role::Reader),
            Err(Denied::Unknown)
        );
        assert_eq!(
            auth.check(Some("Basic dA=="), Role::Reader),
            Err(Denied::Missing)
        );
        assert_eq!(
            auth.check(Some("Bearer t-read"), Role::Reader)
                .unwrap()
                .name,
            "svc"
        );
        assert!(matches!(
            auth.check(Some("Bearer t-read"), Role::Admin),
            Err(Denied::Forbidden {
                needed: Role::Admin,
                ..
            })
        ));
        assert_eq!(
            auth.check(Some("Bearer t-admin"), Role::Writer)
                .unwrap()
                .role,
            Role::Admin
        );
    }

    #[test]
    fn a_token_pasted_instead_of_its_hash_is_refused() {
        let mut c = config("svc", Role::Reader, "x");
        c.sha256 = Some("qv_1234".into());
        let e = Auth::new(&[c], None).err().unwrap().to_string();
        assert!(e.contains("64 hex digits"), "{e}");
        let (token, hash) = new_token().unwrap();
        assert_eq!(hex::encode(sha256(token.as_bytes())), hash);
        assert!(token.starts_with("qv_") && token.len() == 67);
    }
}
