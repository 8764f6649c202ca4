//! Capability tokens end to end (real Biscuit signatures, no node): every role against
//! the whole catalogue, attenuation, revocation, expiry, foreign keys, escalation.

use runplane_policy::PolicyError;
use runplane_policy::tokens::{
    Grant, OPERATIONS, Principal, Request, Restriction, Role, TokenAuthority, TokenVerifier, attenuate, may_grant, revocation_ids, role_allows,
};

const NOW: u64 = 1_795_428_000;

fn authority(seed: u8) -> TokenAuthority {
    TokenAuthority::from_seed(&[seed; 32]).expect("key")
}

fn grant(role: Role, tenant: Option<&str>) -> Grant {
    Grant { role, tenant: tenant.map(str::to_owned), subject: format!("{}@example.com", role.as_str()), expires_unix_secs: None }
}

fn never(_: &str) -> bool {
    false
}

fn ask<'a>(operation: &'a str, tenant: Option<&'a str>) -> Request<'a> {
    Request { operation, tenant, route: None }
}

#[test]
fn each_role_can_do_exactly_its_operations() {
    let auth = authority(1);
    let v = TokenVerifier::new(auth.public_key());
    for role in Role::ALL {
        let own = role.is_tenant_scoped().then_some("acme");
        let token = auth.mint(&grant(role, own)).expect("mint");
        for (op, roles) in OPERATIONS {
            for target in [None, Some("acme"), Some("globex")] {
                let expected = roles.contains(&role) && (!role.is_tenant_scoped() || target == Some("acme"));
                assert_eq!(role_allows(role, op, own, target), expected, "catalogue: {} {op} {target:?}", role.as_str());
                let got = v.authorize(&token, &ask(op, target), NOW, &never);
                assert_eq!(got.is_ok(), expected, "{} {op} on {target:?}: {got:?}", role.as_str());
                if let Err(e) = got {
                    assert!(matches!(e, PolicyError::Forbidden { .. }), "{e}");
                }
            }
        }
    }
}

#[test]
fn attenuation_only_narrows() {
    let auth = authority(2);
    let v = TokenVerifier::new(auth.public_key());
    let admin = auth.mint(&grant(Role::InstanceAdmin, None)).expect("mint");
    let audit_only = attenuate(&admin, &Restriction { operations: Some(vec!["audit.read".into(), "tenant.list".into()]), ..Default::default() }).expect("attenuate");
    assert!(v.authorize(&audit_only, &ask("audit.read", None), NOW, &never).is_ok());
    assert!(matches!(v.authorize(&audit_only, &ask("tenant.create", None), NOW, &never), Err(PolicyError::Forbidden { .. })));
    // Narrowing again can only intersect.
    let narrower = attenuate(&audit_only, &Restriction { operations: Some(vec!["tenant.list".into()]), ..Default::default() }).expect("attenuate");
    assert!(v.authorize(&narrower, &ask("audit.read", None), NOW, &never).is_err());
    assert!(v.authorize(&narrower, &ask("tenant.list", None), NOW, &never).is_ok());
    // A block cannot grant: adding role("instance-admin") facts in a later block is ignored.
    let tenant = auth.mint(&grant(Role::Tenant, Some("acme"))).expect("mint");
    let unverified = biscuit_auth::UnverifiedBiscuit::from_base64(&tenant).expect("parse");
    let forged = unverified
        .append(biscuit_auth::BlockBuilder::new().code("role(\"instance-admin\"); tenant_scope(\"globex\");").expect("code"))
        .expect("append")
        .to_base64()
        .expect("encode");
    assert!(v.authorize(&forged, &ask("tenant.create", None), NOW, &never).is_err(), "a later block's role fact is not trusted");
    assert!(v.authorize(&forged, &ask("invoke", Some("globex")), NOW, &never).is_err());
    assert_eq!(v.identify(&forged).expect("identify").role, Role::Tenant);
    // Dropping the attenuation block breaks the signature chain.
    let mut bytes = base64_decode(&audit_only);
    let last = bytes.len() - 5;
    bytes[last] ^= 0x55;
    assert!(v.authorize(&base64_encode(&bytes), &ask("audit.read", None), NOW, &never).is_err());
    // Routes and expiry restrictions.
    let t = auth.mint(&grant(Role::Tenant, Some("acme"))).expect("mint");
    let one_route = attenuate(&t, &Restriction { routes: Some(vec!["orders".into()]), expires_unix_secs: Some(NOW + 10), ..Default::default() }).expect("attenuate");
    let route = |r| Request { operation: "invoke", tenant: Some("acme"), route: Some(r) };
    assert!(v.authorize(&one_route, &route("orders"), NOW, &never).is_ok());
    assert!(v.authorize(&one_route, &route("billing"), NOW, &never).is_err());
    assert!(v.authorize(&one_route, &route("orders"), NOW + 11, &never).is_err(), "the holder's expiry applies");
    assert!(attenuate(&t, &Restriction { operations: Some(vec!["make.coffee".into()]), ..Default::default() }).is_err());
}

#[test]
fn foreign_keys_garbage_revocation_and_expiry_are_refused() {
    let auth = authority(3);
    let v = TokenVerifier::new(auth.public_key());
    let other = authority(4).mint(&grant(Role::InstanceAdmin, None)).expect("mint");
    assert!(matches!(v.authorize(&other, &ask("tenant.list", None), NOW, &never), Err(PolicyError::InvalidToken(_))));
    for garbage in ["", "not-a-token", "EnQKCgoIdGVzdA", "rpk_abc"] {
        assert!(matches!(v.authorize(garbage, &ask("tenant.list", None), NOW, &never), Err(PolicyError::InvalidToken(_))), "{garbage}");
    }
    let token = auth.mint(&grant(Role::Auditor, None)).expect("mint");
    assert!(v.authorize(&token, &ask("audit.read", None), NOW, &never).is_ok(), "cached decision");
    let ids = revocation_ids(&token, &auth.public_key()).expect("ids");
    let attenuated = attenuate(&token, &Restriction { operations: Some(vec!["audit.read".into()]), ..Default::default() }).expect("attenuate");
    let revoked = |id: &str| id == ids[0];
    assert_eq!(v.authorize(&token, &ask("audit.read", None), NOW, &revoked), Err(PolicyError::Revoked), "revocation beats the cache");
    assert_eq!(v.authorize(&attenuated, &ask("audit.read", None), NOW, &revoked), Err(PolicyError::Revoked), "and covers attenuated copies");
    let expiring = auth.mint(&Grant { expires_unix_secs: Some(NOW + 60), ..grant(Role::Auditor, None) }).expect("mint");
    assert!(v.authorize(&expiring, &ask("audit.read", None), NOW + 60, &never).is_ok());
    assert_eq!(v.authorize(&expiring, &ask("audit.read", None), NOW + 61, &never), Err(PolicyError::Expired));
}

#[test]
fn minting_refuses_escalation_and_inconsistent_grants() {
    let auth = authority(5);
    let v = TokenVerifier::new(auth.public_key());
    let ta = v.identify(&auth.mint(&grant(Role::TenantAdmin, Some("acme"))).expect("mint")).expect("identify");
    let admin = Principal { role: Role::InstanceAdmin, ..ta.clone() };
    assert!(may_grant(&ta, &grant(Role::Tenant, Some("acme"))));
    assert!(may_grant(&ta, &grant(Role::TenantAdmin, Some("acme"))));
    assert!(!may_grant(&ta, &grant(Role::InstanceAdmin, None)));
    assert!(!may_grant(&ta, &grant(Role::Tenant, Some("globex"))));
    assert!(!may_grant(&Principal { role: Role::Deployer, tenant: None, ..ta.clone() }, &grant(Role::Tenant, Some("acme"))));
    assert!(may_grant(&admin, &grant(Role::Deployer, None)));
    assert!(auth.mint(&grant(Role::Tenant, None)).is_err(), "a tenant token needs a tenant");
    assert!(auth.mint(&grant(Role::Deployer, Some("acme"))).is_err(), "an instance role has none");
    assert!(auth.mint(&Grant { subject: "a\"b".into(), ..grant(Role::Deployer, None) }).is_err());
}

/// Not an assertion: a rough timing, printed with `--nocapture` (the bench is
/// `policy-bench`).
#[test]
fn timing_of_a_cached_authorization() {
    let auth = authority(6);
    let v = TokenVerifier::new(auth.public_key());
    let token = auth.mint(&grant(Role::Tenant, Some("acme"))).expect("mint");
    let req = Request { operation: "invoke", tenant: Some("acme"), route: Some("orders") };
    let started = std::time::Instant::now();
    for i in 0..2000 {
        let _ = v.authorize(&token, &req, NOW + i / 1000, &never);
    }
    println!("{:.2} µs per authorization (cached, 2 distinct seconds)", started.elapsed().as_secs_f64() * 1e6 / 2000.0);
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE.decode(s).expect("a token is base64url")
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE.encode(bytes)
}
