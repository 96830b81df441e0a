//! `fishchat register` and `fishchat login`: accounts and tokens from the register service.

use std::io::{BufRead, Write};

use anyhow::{Context, bail};

use super::Globals;
use super::profile::Profile;

/// The password from `--password`, `FISHCHAT_PASSWORD`, or the terminal.
pub fn password(given: Option<String>) -> anyhow::Result<String> {
    if let Some(password) = given {
        return Ok(password);
    }
    eprint!("password: ");
    std::io::stderr().flush()?;
    let mut line = String::new();
    let read = std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading the password")?;
    if read == 0 {
        bail!("no password: pass --password, set FISHCHAT_PASSWORD, or type it");
    }
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

/// Creates the user `name`.
pub async fn register(globals: &Globals, name: &str, password: &str) -> anyhow::Result<()> {
    let user_id = globals
        .register_api()
        .create_user(name, password)
        .await
        .with_context(|| format!("registering {name}"))?;
    println!("registered {name} as user {user_id}; next: fishchat login {name}");
    Ok(())
}

/// Logs `name` in and stores the token as the default identity.
pub async fn login(globals: &Globals, name: &str, password: &str) -> anyhow::Result<()> {
    let login = globals
        .register_api()
        .login(name, password)
        .await
        .with_context(|| format!("logging in as {name}"))?;
    let profile = Profile {
        name: name.to_owned(),
        user_id: login.user_id,
        token: login.token,
        expires_at_ms: login.expires_at_ms,
    };
    globals.home()?.save(&profile)?;
    println!("logged in as {name} (user {})", profile.user_id);
    Ok(())
}
