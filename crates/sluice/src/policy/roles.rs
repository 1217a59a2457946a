//! The admin role model: what a principal may reach (power × scope), decided in one place.
//!
//! The table in `docs/governance.md` ("Roles") is the contract; `tests/roles_matrix.rs`
//! walks every admin route against it. A principal's reach is its power (inference < read
//! < manage < admin) and its scope (one team, or the whole organisation). Every admin route
//! names the [`Need`] it has; [`authorize`] turns (reach, need) into the scope the route's
//! answers are held to, and [`may_set_key`] is the only gate for creating or changing a key.

use super::auth::Principal;
use super::keys::Role;
use thiserror::Error;

/// What a principal may do on the admin API, weakest first (the order is the lattice).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Power {
    /// No admin role: inference only.
    Inference,
    /// `viewer`: every read, no write.
    Read,
    /// `team_admin`: reads, and writes to keys and users.
    Manage,
    /// `admin` (and the master key): everything.
    Admin,
}

/// Which part of the organisation a principal reaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    Org,
    Team(String),
}

impl Scope {
    /// Whether something owned by `team` (`None`: by no team, i.e. the organisation) is in scope.
    pub fn sees_team(&self, team: Option<&str>) -> bool {
        match self {
            Scope::Org => true,
            Scope::Team(t) => team == Some(t.as_str()),
        }
    }

    /// Whether this scope includes all of `other`.
    pub fn contains(&self, other: &Scope) -> bool {
        match (self, other) {
            (Scope::Org, _) => true,
            (Scope::Team(a), Scope::Team(b)) => a == b,
            (Scope::Team(_), Scope::Org) => false,
        }
    }
}

/// Power and scope together: how far a principal (or a key, once used) reaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reach {
    pub power: Power,
    pub scope: Scope,
}

impl Reach {
    /// The reach a key with `role` in `team` has when it is used.
    ///
    /// `admin` is organisation-wide whatever its team (the team only bills it). A `viewer`
    /// with a team sees that team only: that is what makes a viewer created by a
    /// `team_admin` harmless. A `team_admin` without a team manages nothing.
    pub fn of_key(role: Option<Role>, team: Option<&str>) -> Reach {
        let team_scope = || team.map_or(Scope::Org, |t| Scope::Team(t.to_string()));
        match role {
            Some(Role::Admin) => Reach {
                power: Power::Admin,
                scope: Scope::Org,
            },
            Some(Role::TeamAdmin) => match team {
                Some(t) => Reach {
                    power: Power::Manage,
                    scope: Scope::Team(t.to_string()),
                },
                None => Reach {
                    power: Power::Inference,
                    scope: Scope::Org,
                },
            },
            Some(Role::Viewer) => Reach {
                power: Power::Read,
                scope: team_scope(),
            },
            None => Reach {
                power: Power::Inference,
                scope: team_scope(),
            },
        }
    }

    pub fn of_principal(p: &Principal) -> Reach {
        match p {
            Principal::Anonymous | Principal::Master => Reach {
                power: Power::Admin,
                scope: Scope::Org,
            },
            Principal::Key(k) => Reach::of_key(k.role, k.team.as_deref()),
        }
    }

    /// Whether `other` reaches nothing this one does not.
    pub fn covers(&self, other: &Reach) -> bool {
        self.power >= other.power && self.scope.contains(&other.scope)
    }
}

/// What an admin route needs, as named in the docs table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Any admin role; answers are held to the caller's scope.
    Read,
    /// Any admin role with organisation scope (the data is not per team).
    ReadOrg,
    /// `team_admin` or `admin`; writes are held to the caller's scope.
    Write,
    /// `admin` only.
    Admin,
}

impl Need {
    pub fn as_str(self) -> &'static str {
        match self {
            Need::Read => "read",
            Need::ReadOrg => "read_org",
            Need::Write => "write",
            Need::Admin => "admin",
        }
    }
}

/// Why the role model refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum Denied {
    #[error("this key may not use the admin API (it has no admin role)")]
    NoAdminRole,
    #[error("this key has the viewer role: read-only")]
    ReadOnly,
    #[error("this route needs an organisation-wide role (admin or a viewer without a team)")]
    NeedsOrg,
    #[error("only admins may do this")]
    AdminOnly,
    #[error("a team-scoped key may only act on {what} of team {team:?}")]
    OtherTeam { what: &'static str, team: String },
    #[error("a key may not create or change a key with more reach than its own ({reason})")]
    MoreReach { reason: String },
}

/// The one check every admin route passes: may `who` use a route that needs `need`? On
/// success, the scope its reads and writes are held to.
pub fn authorize(who: &Reach, need: Need) -> Result<Scope, Denied> {
    if who.power == Power::Inference {
        return Err(Denied::NoAdminRole);
    }
    match need {
        Need::Read => {}
        Need::ReadOrg if who.scope != Scope::Org => return Err(Denied::NeedsOrg),
        Need::ReadOrg => {}
        Need::Write if who.power < Power::Manage => return Err(Denied::ReadOnly),
        Need::Write => {}
        Need::Admin if who.power < Power::Admin => return Err(Denied::AdminOnly),
        Need::Admin => {}
    }
    Ok(who.scope.clone())
}

/// May `who` make a key reach `after`? When changing an existing key (`before`), the key as
/// it was must be within reach too: a `team_admin` may not rotate, update or revoke an
/// `admin` key that happens to bill to its team (rotation would hand it the new secret).
pub fn may_set_key(who: &Reach, before: Option<&Reach>, after: &Reach) -> Result<(), Denied> {
    for (target, when) in before
        .map(|b| (b, "as it is"))
        .into_iter()
        .chain([(after, "as requested")])
    {
        if !who.covers(target) {
            let reason = if who.power < target.power {
                format!(
                    "the key {when} has {:?} power, the caller {:?}",
                    target.power, who.power
                )
            } else {
                format!(
                    "the key {when} reaches {}, the caller only {}",
                    describe(&target.scope),
                    describe(&who.scope)
                )
            };
            return Err(Denied::MoreReach { reason });
        }
    }
    Ok(())
}

/// May `who` put something owned by `team` into its scope (a key's user, a user's team)?
pub fn may_touch(who: &Scope, what: &'static str, team: Option<&str>) -> Result<(), Denied> {
    match who {
        Scope::Team(own) if !who.sees_team(team) => Err(Denied::OtherTeam {
            what,
            team: own.clone(),
        }),
        _ => Ok(()),
    }
}

fn describe(s: &Scope) -> String {
    match s {
        Scope::Org => "the whole organisation".into(),
        Scope::Team(t) => format!("team {t:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(role: Option<Role>, team: Option<&str>) -> Reach {
        Reach::of_key(role, team)
    }

    #[test]
    fn a_team_admin_cannot_mint_or_touch_more_reach() {
        let ta = key(Some(Role::TeamAdmin), Some("a"));
        // Its own team: inference keys, viewers (scoped), peers.
        assert!(may_set_key(&ta, None, &key(None, Some("a"))).is_ok());
        assert!(may_set_key(&ta, None, &key(Some(Role::Viewer), Some("a"))).is_ok());
        assert!(may_set_key(&ta, None, &key(Some(Role::TeamAdmin), Some("a"))).is_ok());
        // An org-wide viewer, an admin, another team: refused.
        assert!(may_set_key(&ta, None, &key(Some(Role::Viewer), None)).is_err());
        assert!(may_set_key(&ta, None, &key(Some(Role::Admin), Some("a"))).is_err());
        assert!(may_set_key(&ta, None, &key(None, Some("b"))).is_err());
        // Changing an admin key of its own team into something harmless: the "before" counts.
        let admin_in_a = key(Some(Role::Admin), Some("a"));
        assert!(may_set_key(&ta, Some(&admin_in_a), &key(None, Some("a"))).is_err());
    }

    #[test]
    fn viewers_and_admins() {
        let v = key(Some(Role::Viewer), None);
        assert_eq!(authorize(&v, Need::Read), Ok(Scope::Org));
        assert_eq!(authorize(&v, Need::Write), Err(Denied::ReadOnly));
        let tv = key(Some(Role::Viewer), Some("a"));
        assert_eq!(authorize(&tv, Need::Read), Ok(Scope::Team("a".into())));
        assert_eq!(authorize(&tv, Need::ReadOrg), Err(Denied::NeedsOrg));
        let admin = key(Some(Role::Admin), Some("a"));
        assert_eq!(authorize(&admin, Need::Admin), Ok(Scope::Org));
        assert!(may_set_key(&admin, None, &key(Some(Role::Admin), None)).is_ok());
        assert_eq!(
            authorize(&key(None, None), Need::Read),
            Err(Denied::NoAdminRole)
        );
        assert_eq!(
            authorize(&key(Some(Role::TeamAdmin), None), Need::Read),
            Err(Denied::NoAdminRole)
        );
    }
}
