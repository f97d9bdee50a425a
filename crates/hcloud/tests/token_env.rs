//! The token from `HCLOUD_TOKEN`. Its own test binary with one test: the
//! environment is process-wide, and changing it while other threads read
//! it (the HTTP stack reads proxy variables) is a race.

use mailherd_hcloud::{Token, TokenError, TOKEN_ENV_VAR};

#[test]
fn the_token_is_read_from_hcloud_token() {
    assert_eq!(TOKEN_ENV_VAR, "HCLOUD_TOKEN");

    std::env::set_var(TOKEN_ENV_VAR, " from-the-environment-3f9a \n");
    assert_eq!(
        Token::from_env().unwrap().expose_secret(),
        "from-the-environment-3f9a"
    );

    std::env::set_var(TOKEN_ENV_VAR, "   ");
    let error = Token::from_env().unwrap_err();
    assert!(matches!(error, TokenError::EmptyVar { .. }), "{error:?}");
    assert_eq!(
        error.to_string(),
        "environment variable HCLOUD_TOKEN is empty (it should hold the hcloud token)"
    );

    std::env::remove_var(TOKEN_ENV_VAR);
    let error = Token::from_env().unwrap_err();
    assert_eq!(
        error.to_string(),
        "environment variable HCLOUD_TOKEN is not set (it should hold the hcloud token)"
    );
}
