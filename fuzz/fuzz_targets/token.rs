//! Token parsing: `JwtVerifier::verify` on any text never panics and never accepts a forgery; on
//! tokens correctly signed over arbitrary claims (what a holder of the secret could send), an
//! accepted token always yields a valid, non-reserved tenant and a non-empty subject.
#![no_main]

use std::sync::LazyLock;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use libfuzzer_sys::fuzz_target;
use resk_core::TenantId;
use resk_server::{Cli, auth::JwtVerifier};
use sha2::Sha256;

const SECRET: &str = "resk-fuzz-secret-0123456789abcdefghijkl";

// Setup failures panic: a target that returned early would pass while testing nothing.
static VERIFIER: LazyLock<JwtVerifier> = LazyLock::new(|| {
    // No lifetime limit, so tokens with a far `exp` reach the claim checks.
    let args = [
        "resk-server",
        "--jwt-secret",
        SECRET,
        "--jwt-max-lifetime-secs",
        "0",
    ];
    let cli = <Cli as clap::Parser>::try_parse_from(args)
        .unwrap_or_else(|e| panic!("the fuzz target's flags do not parse: {e}"));
    let config = cli
        .serve
        .resolve()
        .unwrap_or_else(|e| panic!("the fuzz target's verifier config does not build: {e}"));
    JwtVerifier::new(&config.jwt)
});

static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap_or_else(|e| panic!("no tokio runtime for the fuzz target: {e}"))
});

fn signed(claims: &[u8]) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims);
    let signing_input = format!("{header}.{payload}");
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes())
        .unwrap_or_else(|e| panic!("HMAC takes any key length: {e}"));
    mac.update(signing_input.as_bytes());
    let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{signing_input}.{signature}")
}

fuzz_target!(|data: &[u8]| {
    let (verifier, runtime) = (&*VERIFIER, &*RUNTIME);
    let Some((mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        // Any text: never accepted (it cannot carry a valid signature), never a panic.
        let token = String::from_utf8_lossy(rest);
        assert!(
            runtime.block_on(verifier.verify(&token)).is_err(),
            "forgery accepted"
        );
    } else if let Ok(principal) = runtime.block_on(verifier.verify(&signed(rest))) {
        assert!(TenantId::new(principal.tenant.as_str()).is_ok());
        assert_ne!(
            principal.tenant.as_str(),
            "_resk",
            "reserved tenant accepted"
        );
        assert!(!principal.subject.is_empty(), "empty subject accepted");
    }
});
