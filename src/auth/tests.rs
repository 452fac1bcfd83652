use std::path::Path;

use prost::Message;

use super::*;
use crate::FILE_DESCRIPTOR_SET;

fn headers(authorization: Option<&str>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Some(value) = authorization {
        headers.insert(AUTHORIZATION, HeaderValue::from_str(value).expect("header"));
    }
    headers
}

fn bearer_of(token: &Token) -> HeaderMap {
    headers(Some(&format!("Bearer {}", token.expose())))
}

#[test]
fn every_method_of_every_contract_needs_a_named_right() {
    let descriptors =
        prost_types::FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).expect("descriptors");
    let mut methods = 0;
    for file in descriptors.file {
        let package = file.package.unwrap_or_default();
        for service in file.service {
            let service_name = service.name.unwrap_or_default();
            for method in service.method {
                let rpc = format!(
                    "{package}.{service_name}/{}",
                    method.name.unwrap_or_default()
                );
                methods += 1;
                for reflection in [Reflection::Open, Reflection::Off] {
                    assert!(
                        matches!(grpc_access(&rpc, reflection), Access::Needs(_)),
                        "{rpc} has no right in grpc_access: add it (and to docs/security.md)"
                    );
                }
            }
        }
    }
    assert!(
        methods >= 16,
        "only {methods} methods found in the contracts"
    );
}

#[test]
fn health_is_open_and_reflection_follows_the_flag() {
    assert_eq!(
        grpc_access("grpc.health.v1.Health/Check", Reflection::Off),
        Access::Open
    );
    assert_eq!(
        grpc_access("grpc.health.v1.Health/Watch", Reflection::Off),
        Access::Open
    );
    let reflection = "grpc.reflection.v1.ServerReflection/ServerReflectionInfo";
    assert_eq!(grpc_access(reflection, Reflection::Open), Access::Open);
    assert_eq!(
        grpc_access(reflection, Reflection::Authenticated),
        Access::Authenticated
    );
    assert_eq!(
        grpc_access("vesper.v1.Nothing/Here", Reflection::Open),
        Access::Authenticated
    );
    assert_eq!(
        grpc_access("vesper.v1.Storage/DeleteObject", Reflection::Open),
        Access::Needs(Right::LakeWrite)
    );
}

#[test]
fn rights_read_and_write_the_same() {
    for right in Right::ALL {
        assert_eq!(right.as_str().parse::<Right>().expect("right"), right);
    }
    let rights: Rights = "lake:write, events:write".parse().expect("rights");
    assert_eq!(rights.to_string(), "events:write,lake:write");
    assert!(rights.contains(Right::LakeWrite) && !rights.contains(Right::LakeRead));
    let err = "lake:admin"
        .parse::<Rights>()
        .expect_err("unknown")
        .to_string();
    assert!(
        err.contains("lake:admin") && err.contains("lake:read"),
        "{err}"
    );
    assert!(matches!("".parse::<Rights>(), Err(AuthError::NoRights)));
}

#[test]
fn tokens_are_redacted_and_hashed() {
    let token = Token::generate();
    assert!(token.expose().starts_with(TOKEN_PREFIX));
    assert_eq!(token.expose().len(), TOKEN_PREFIX.len() + 64);
    assert_ne!(token.expose(), Token::generate().expose());
    let debug = format!("{token:?}");
    assert!(!debug.contains(token.expose()), "{debug}");
    let digest = token.digest().to_string();
    assert_eq!(
        digest.parse::<TokenDigest>().expect("digest"),
        token.digest()
    );
    assert!(!digest.contains(token.expose()));
    assert!(token.authorization().is_sensitive());
    for bad in ["", "  ", "has space", "tab\there"] {
        let err = Token::new(bad).expect_err(bad).to_string();
        assert!(!err.contains(bad.trim()) || bad.trim().is_empty(), "{err}");
    }
}

#[test]
fn a_tokens_file_is_read_line_by_line() {
    let ingest = Token::generate();
    let old = Token::generate();
    let new = Token::generate();
    let text = format!(
        "# comment\n\n{}\n{}   # the old one\n{}\n",
        tokens_file_line("ingest", "lake:write".parse().expect("rights"), &ingest),
        tokens_file_line("ops", Rights::all(), &old),
        tokens_file_line("ops", Rights::all(), &new),
    );
    let table = TokenTable::parse(&text, Path::new("tokens")).expect("table");
    assert_eq!(table.len(), 3);
    // During a rotation, both tokens of a name are accepted.
    for token in [&old, &new] {
        let principal = table.authenticate(&bearer_of(token)).expect("known");
        assert_eq!(&*principal.name, "ops");
    }
    let principal = table
        .authorize(&bearer_of(&ingest), Right::LakeWrite)
        .expect("allowed");
    assert_eq!(&*principal.name, "ingest");
}

#[test]
fn bad_tokens_files_name_the_line() {
    let token = Token::generate();
    let digest = token.digest();
    for (text, hint) in [
        (
            "ingest lake:write".to_owned(),
            "line 1: expected NAME RIGHTS",
        ),
        (
            format!("\ningest lake:admin {digest}"),
            "line 2: unknown right",
        ),
        (format!("in gest lake:write {digest}"), "line 1: expected"),
        (format!("in/gest lake:write {digest}"), "invalid token name"),
        (
            "ingest lake:write sha256:abcd".to_owned(),
            "invalid token digest",
        ),
        (
            format!("ingest lake:write {}", token.expose()),
            "invalid token digest",
        ),
        (
            format!("a lake:write {digest}\nb lake:read {digest}"),
            "line 2: this digest is on an earlier line",
        ),
    ] {
        let err = TokenTable::parse(&text, Path::new("tokens"))
            .expect_err(&text)
            .to_string();
        assert!(err.contains(hint), "{text:?}: {err}");
        assert!(!err.contains(token.expose()), "the token leaked: {err}");
    }
}

#[test]
fn each_refusal_has_its_own_kind_and_names_the_right() {
    let token = Token::generate();
    let table =
        TokenTable::default().with_token("reader", "lake:read".parse().expect("rights"), &token);
    let rpc = "vesper.v1.Storage/DeleteObject";
    let cases = [
        (headers(None), Refusal::Missing),
        (headers(Some("Basic dXNlcjpwYXNz")), Refusal::Malformed),
        (headers(Some("Bearer")), Refusal::Malformed),
        (headers(Some("Bearer vsp_wrong")), Refusal::Unknown),
    ];
    for (headers, expected) in cases {
        let refusal = table
            .authorize(&headers, Right::LakeWrite)
            .expect_err("refused");
        assert_eq!(refusal, expected);
        let status = refusal.status(rpc, Some(Right::LakeWrite));
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
        assert!(
            status.message().contains("lake:write"),
            "{}",
            status.message()
        );
        assert!(status.metadata().get("www-authenticate").is_some());
    }
    let lacks = table
        .authorize(&bearer_of(&token), Right::LakeWrite)
        .expect_err("no right");
    let status = lacks.status(rpc, Some(Right::LakeWrite));
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    assert!(
        status.message().contains("lake:write") && status.message().contains("reader"),
        "{}",
        status.message()
    );
    assert!(!status.message().contains(token.expose()));
    // The scheme is case-insensitive.
    let lower = headers(Some(&format!("bearer {}", token.expose())));
    assert!(table.authorize(&lower, Right::LakeRead).is_ok());
}
