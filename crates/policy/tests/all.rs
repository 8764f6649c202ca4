//! Capability tokens end to end (real Biscuit signatures, no node): every role against
//! the whole catalogue, attenuation, revocation, expiry, foreign keys, escalation; and
//! the flag and domain rules as the node combines them.

use runplane_policy::PolicyError;
use runplane_policy::tokens::{
    Grant, OPERATIONS, Principal, Request, Restriction, Role, TokenAuthority, TokenVerifier, attenuate, may_grant, revocation, revocation_ids,
    role_allows,
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

#[test]
fn a_restriction_survives_re_encoding_and_cannot_be_satisfied_by_a_later_block() {
    let auth = authority(7);
    let v = TokenVerifier::new(auth.public_key());
    let admin = auth.mint(&grant(Role::InstanceAdmin, None)).expect("mint");
    let narrowed = attenuate(&admin, &Restriction { operations: Some(vec!["audit.read".into()]), ..Default::default() }).expect("attenuate");
    assert!(matches!(v.authorize(&narrowed, &ask("tenant.create", None), NOW, &never), Err(PolicyError::Forbidden { .. })));
    // Decoding and encoding again (the only thing a holder can do without the
    // ephemeral key of the last block) keeps every block.
    let reencoded = biscuit_auth::UnverifiedBiscuit::from_base64(&narrowed).expect("parse").to_base64().expect("encode");
    assert!(v.authorize(&reencoded, &ask("tenant.create", None), NOW, &never).is_err());
    assert_eq!(revocation_ids(&reencoded, &auth.public_key()).expect("ids").len(), 2);
    // A later block offering the facts the restriction asks for does not satisfy it:
    // a block's checks trust the authority, the authorizer and that block only.
    let unverified = biscuit_auth::UnverifiedBiscuit::from_base64(&narrowed).expect("parse");
    let sneaky = unverified
        .append(biscuit_auth::BlockBuilder::new().code("operation(\"audit.read\"); operation(\"tenant.create\");").expect("code"))
        .expect("append")
        .to_base64()
        .expect("encode");
    assert!(matches!(v.authorize(&sneaky, &ask("tenant.create", None), NOW, &never), Err(PolicyError::Forbidden { .. })));
    // Truncating the token (dropping the attenuation block's bytes) breaks it.
    let bytes = base64_decode(&narrowed);
    for keep in [bytes.len() / 2, bytes.len() - 1] {
        assert!(matches!(v.authorize(&base64_encode(&bytes[..keep]), &ask("tenant.create", None), NOW, &never), Err(PolicyError::InvalidToken(_))));
    }
    // The message says an attenuation is what forbids it.
    let e = v.authorize(&narrowed, &ask("tenant.create", None), NOW, &never).expect_err("forbidden").to_string();
    assert!(e.contains("attenuation"), "{e}");
}

#[test]
fn tenant_scoped_tokens_stay_in_their_tenant() {
    let auth = authority(8);
    let v = TokenVerifier::new(auth.public_key());
    for role in [Role::TenantAdmin, Role::Tenant] {
        let token = auth.mint(&grant(role, Some("acme"))).expect("mint");
        let p = v.authorize(&token, &ask("invoke", Some("acme")), NOW, &never).expect("own tenant");
        assert_eq!((p.role, p.tenant.as_deref()), (role, Some("acme")));
        let e = v.authorize(&token, &ask("invoke", Some("globex")), NOW, &never).expect_err("another tenant").to_string();
        assert!(e.contains("only on its own tenant"), "{e}");
        assert!(v.authorize(&token, &ask("invoke", None), NOW, &never).is_err(), "no target tenant");
        // A holder-added tenant restriction cannot move the token to another tenant.
        let moved = attenuate(&token, &Restriction { tenant: Some("globex".into()), ..Default::default() }).expect("attenuate");
        assert!(v.authorize(&moved, &ask("invoke", Some("globex")), NOW, &never).is_err());
        assert!(v.authorize(&moved, &ask("invoke", Some("acme")), NOW, &never).is_err(), "and the restriction bites at home");
    }
    let ta = auth.mint(&grant(Role::TenantAdmin, Some("acme"))).expect("mint");
    let e = v.authorize(&ta, &ask("tenant.list", None), NOW, &never).expect_err("instance-wide").to_string();
    assert!(e.contains("tenant.list") && e.contains("tenant-admin") && e.contains("instance-admin"), "{e}");
    let e = v.authorize(&ta, &ask("flag.set", None), NOW, &never).expect_err("instance flags").to_string();
    assert!(e.contains("only on its own tenant") && e.contains("instance-admin"), "{e}");
}

#[test]
fn revocation_applies_at_once_to_cached_decisions_and_to_any_block() {
    let auth = authority(9);
    let v = TokenVerifier::new(auth.public_key());
    let token = auth.mint(&grant(Role::Operator, None)).expect("mint");
    let narrowed = attenuate(&token, &Restriction { operations: Some(vec!["replay".into()]), ..Default::default() }).expect("attenuate");
    let ids = revocation_ids(&narrowed, &auth.public_key()).expect("ids");
    assert_eq!(ids.len(), 2);
    let principal = v.authorize(&narrowed, &ask("replay", None), NOW, &never).expect("allowed and now cached");
    assert_eq!(principal.revocation_ids, ids);
    assert_eq!(principal.token_id, ids[0]);
    assert_eq!(v.identify(&token).expect("identify").token_id, ids[0], "attenuated copies share the token id");
    // Revoking the attenuation block's id refuses that copy only.
    let only_copy = |id: &str| id == ids[1];
    assert_eq!(v.authorize(&narrowed, &ask("replay", None), NOW, &only_copy), Err(PolicyError::Revoked));
    assert!(v.authorize(&token, &ask("replay", None), NOW, &only_copy).is_ok());
    // Revoking the authority id refuses both, even with decisions cached for this second.
    let original = |id: &str| id == ids[0];
    assert_eq!(v.authorize(&token, &ask("replay", None), NOW, &original), Err(PolicyError::Revoked));
    assert_eq!(v.authorize(&narrowed, &ask("replay", None), NOW, &original), Err(PolicyError::Revoked));
    assert!(PolicyError::Revoked.to_string().contains("ask its issuer"));
}

#[test]
fn expiry_uses_the_injected_time_for_minted_and_attenuated_limits() {
    let auth = authority(10);
    let v = TokenVerifier::new(auth.public_key());
    let token = auth.mint(&Grant { expires_unix_secs: Some(NOW + 60), ..grant(Role::Deployer, None) }).expect("mint");
    assert_eq!(v.identify(&token).expect("identify").expires_unix_secs, Some(NOW + 60));
    assert!(v.authorize(&token, &ask("deploy", None), NOW + 60, &never).is_ok(), "valid through its last second");
    assert_eq!(v.authorize(&token, &ask("deploy", None), NOW + 61, &never), Err(PolicyError::Expired));
    // A holder's earlier expiry is reported as expiry too, not as a missing right.
    let sooner = attenuate(&token, &Restriction { expires_unix_secs: Some(NOW + 10), ..Default::default() }).expect("attenuate");
    assert!(v.authorize(&sooner, &ask("deploy", None), NOW + 10, &never).is_ok());
    assert_eq!(v.authorize(&sooner, &ask("deploy", None), NOW + 11, &never), Err(PolicyError::Expired));
    // A later expiry cannot extend the minted one.
    let later = attenuate(&token, &Restriction { expires_unix_secs: Some(NOW + 3_600), ..Default::default() }).expect("attenuate");
    assert_eq!(v.authorize(&later, &ask("deploy", None), NOW + 61, &never), Err(PolicyError::Expired));
    // An expired token without the right is still refused (either answer is a refusal).
    assert!(v.authorize(&sooner, &ask("tenant.create", None), NOW + 11, &never).is_err());
    // A time check of another form (written by hand into a block) is evaluated at each
    // second, and its failure is reported as expiry too.
    let hand = biscuit_auth::UnverifiedBiscuit::from_base64(&token)
        .expect("parse")
        .append(biscuit_auth::BlockBuilder::new().code("check if time($t), $t < 2026-11-23T10:00:05Z;").expect("code"))
        .expect("append")
        .to_base64()
        .expect("encode");
    assert!(v.authorize(&hand, &ask("deploy", None), NOW + 4, &never).is_ok());
    assert_eq!(v.authorize(&hand, &ask("deploy", None), NOW + 5, &never), Err(PolicyError::Expired));
    assert!(v.authorize(&hand, &ask("deploy", None), NOW + 4, &never).is_ok(), "decisions are per second for such a token");
    // Huge times neither panic nor pass.
    let far = auth.mint(&Grant { expires_unix_secs: Some(u64::MAX), ..grant(Role::Deployer, None) });
    assert!(far.is_err(), "an expiry beyond i64 is refused at minting");
    let far = attenuate(&token, &Restriction { expires_unix_secs: Some(u64::MAX), ..Default::default() }).expect("attenuate");
    assert!(v.authorize(&far, &ask("deploy", None), NOW, &never).is_ok());
}

#[test]
fn flags_and_domains_gate_a_tenant_as_the_node_combines_them() {
    use runplane_policy::domains::{CapabilityDomain, DomainRegistry};
    use runplane_policy::flags::{FeatureFlag, FlagContext, FlagSet, Reason};
    use runplane_tenancy::Tier;
    use std::collections::BTreeSet;

    let flag: FeatureFlag = serde_json::from_value(serde_json::json!({
        "feature_id": "new-checkout", "enabled": true, "instance_id": "i-1",
        "entitlement_tier": "pro", "activation_date": "2026-11-23T10:00:00Z", "rollout_percent": 50,
        "variants": [{"name": "a", "weight": 1}, {"name": "b", "weight": 1}]
    }))
    .expect("flag json");
    flag.validate().expect("valid");
    let mut flags = FlagSet::default();
    flags.set_instance(flag.clone());
    flags.set_tenant("beta", FeatureFlag { rollout_percent: None, entitlement_tier: None, ..flag });
    let at = |tenant: &str, tier, now| flags.evaluate("new-checkout", &FlagContext { tenant, tier, subject: tenant, now_unix_secs: now });
    assert_eq!(at("acme", Tier::Pro, NOW - 1).reason, Reason::NotYetActive);
    assert_eq!(at("acme", Tier::Free, NOW).reason, Reason::TierTooLow);
    assert!(at("beta", Tier::Free, NOW).enabled, "beta's own flag has no tier and no rollout");
    let on = (0..1000).filter(|i| at(&format!("t{i}"), Tier::Pro, NOW).enabled).count();
    assert!((440..=560).contains(&on), "{on} of 1000 in a 50% rollout");

    let mut domains = DomainRegistry::default();
    domains.register(CapabilityDomain { domain_id: "com".into(), domain_name: "Commerce".into(), capabilities: vec!["orders".into()], dependencies: vec![] }).expect("com");
    let mut active = BTreeSet::new();
    assert!(matches!(domains.check_capability(&active, "orders"), Err(PolicyError::NotEntitled { .. })));
    domains.check_activation(Tier::Free, &active, "com").expect("activate");
    active.insert("com".to_owned());
    domains.check_capability(&active, "orders").expect("entitled");
}

#[test]
fn public_types_document_themselves_in_openapi() {
    use runplane_policy::domains::CapabilityDomain;
    use runplane_policy::flags::{Evaluation, FeatureFlag};
    #[derive(utoipa::OpenApi)]
    #[openapi(components(schemas(FeatureFlag, Evaluation, CapabilityDomain, Grant, Restriction, Principal)))]
    struct Doc;
    let doc = serde_json::to_value(<Doc as utoipa::OpenApi>::openapi()).expect("json");
    let schemas = &doc["components"]["schemas"];
    // Nested types are collected with their parents, so the node's document has them.
    for name in ["FeatureFlag", "Variant", "Evaluation", "Reason", "CapabilityDomain", "Grant", "Restriction", "Principal", "Role"] {
        assert!(schemas[name].is_object(), "{name} missing from {schemas}");
    }
    assert_eq!(schemas["Role"]["enum"], serde_json::json!(Role::ALL.map(Role::as_str)));
    assert!(schemas["Reason"]["enum"].as_array().expect("enum").contains(&serde_json::json!("not_yet_active")));
}

/// Not an assertion: rough timings, printed with `--nocapture` (the real benchmark is
/// `policy-bench`). Timed assertions do not belong in tests.
#[test]
fn timing_of_authorizations() {
    let auth = authority(6);
    let v = TokenVerifier::new(auth.public_key());
    let token = auth.mint(&grant(Role::Tenant, Some("acme"))).expect("mint");
    let token = attenuate(&token, &Restriction { routes: Some(vec!["orders".into()]), ..Default::default() }).expect("attenuate");
    let req = Request { operation: "invoke", tenant: Some("acme"), route: Some("orders") };
    let revoked: std::collections::HashSet<String> = (0..100).map(|i| format!("{i:064x}")).collect();
    let is_revoked = |id: &str| revoked.contains(id);
    let median = |mut t: Vec<f64>| {
        t.sort_by(f64::total_cmp);
        t[t.len() / 2]
    };
    let time = |n: u64, f: &mut dyn FnMut(u64)| {
        median(
            (0..n)
                .map(|i| {
                    let started = std::time::Instant::now();
                    f(i);
                    started.elapsed().as_secs_f64() * 1e6
                })
                .collect(),
        )
    };
    let _ = v.authorize(&token, &req, NOW, &is_revoked);
    let cached = time(5_000, &mut |_| {
        let _ = std::hint::black_box(v.authorize(&token, &req, NOW, &is_revoked));
    });
    // A new second still hits the decision cache: the token reads the time only in
    // expiry checks, which are applied before the cache.
    let new_second = time(500, &mut |i| {
        let _ = std::hint::black_box(v.authorize(&token, &req, NOW + 1 + i, &is_revoked));
    });
    let expiring = attenuate(&token, &Restriction { expires_unix_secs: Some(NOW + 100_000), ..Default::default() }).expect("attenuate");
    let new_second_expiring = time(500, &mut |i| {
        let _ = std::hint::black_box(v.authorize(&expiring, &req, NOW + 1 + i, &is_revoked));
    });
    let fresh: Vec<String> = (0..200).map(|i| auth.mint(&Grant { subject: format!("s{i}"), ..grant(Role::Tenant, Some("acme")) }).expect("mint")).collect();
    let cold = time(200, &mut |i| {
        let _ = std::hint::black_box(v.authorize(&fresh[i as usize], &req, NOW, &is_revoked));
    });
    println!(
        "median µs per authorize (this build's profile): cached decision {cached:.2}; new second, token without time checks {new_second:.2}; \
         new second, token with an expiry {new_second_expiring:.2}; first use of a token (signature + datalog) {cold:.2}"
    );
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE.decode(s).expect("a token is base64url")
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE.encode(bytes)
}

#[test]
fn revoking_a_copy_spares_its_original_and_a_chain_takes_them_all() {
    let auth = authority(10);
    let v = TokenVerifier::new(auth.public_key());
    let root = auth.public_key();
    let original = auth.mint(&grant(Role::Auditor, None)).expect("mint");
    let narrow = |t: &str, op: &str| attenuate(t, &Restriction { operations: Some(vec![op.into()]), ..Default::default() }).expect("attenuate");
    let copy = narrow(&original, "audit.read");
    let grandchild = narrow(&copy, "audit.read");
    let sibling = narrow(&original, "audit.read");
    let works = |t: &str, revoked: &[String]| v.authorize(t, &ask("audit.read", None), NOW, &|id| revoked.iter().any(|r| r == id)).is_ok();

    let r = revocation(&copy, &root, false).expect("revocation");
    let ids = revocation_ids(&copy, &root).expect("ids");
    assert_eq!((r.revoke.clone(), r.keep.clone()), (vec![ids[1].clone()], vec![ids[0].clone()]), "the copy's own id; its original's kept");
    assert!(!works(&copy, &r.revoke) && !works(&grandchild, &r.revoke), "the copy and what was narrowed from it");
    assert!(works(&original, &r.revoke) && works(&sibling, &r.revoke), "not its original, nor another copy of it");

    let r = revocation(&original, &root, false).expect("revocation");
    assert!(r.keep.is_empty(), "a token never attenuated has one id");
    assert!(!works(&original, &r.revoke) && !works(&copy, &r.revoke) && !works(&sibling, &r.revoke));

    let r = revocation(&grandchild, &root, true).expect("revocation");
    assert_eq!((r.revoke.len(), r.keep.len()), (3, 0));
    for t in [&original, &copy, &grandchild, &sibling] {
        assert!(!works(t, &r.revoke), "a chain revokes everything its authority block signed");
    }
    assert!(revocation("not-a-token", &root, false).is_err());
}
