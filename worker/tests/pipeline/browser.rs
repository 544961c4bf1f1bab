//! A real headless Chromium, driven over WebDriver by a chromedriver this test starts.
//!
//! Each [`Browser`] is its own chromedriver process on a free port with its own Chromium
//! profile directory, so browser tests run in parallel; dropping it ends both. The binaries
//! are Debian's (`chromium`, `chromium-driver`, installed by `infra/test-tools.sh`);
//! `CHROMEDRIVER` and `CHROMIUM` override their paths.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
};

use fantoccini::{Client, ClientBuilder, Locator, elements::Element};
use fraudsense_actors::testing::eventually;
use serde_json::{Value, json};

use crate::helpers::DEADLINE;

/// Where screenshots go: `FRAUDSENSE_ARTIFACTS`, else `target/test-artifacts` in the workspace.
pub fn artifacts_dir() -> PathBuf {
    std::env::var_os("FRAUDSENSE_ARTIFACTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts"))
}

/// A chromedriver process and one browser session on it.
pub struct Browser {
    pub client: Client,
    driver: Child,
    profile: PathBuf,
}

fn binary(var: &str, default: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| default.to_owned())
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    listener.local_addr().map(|a| a.port()).unwrap_or_else(|e| panic!("{e}"))
}

impl Browser {
    /// Starts chromedriver and opens a headless Chromium session with a 1440×900 window.
    pub async fn start() -> Self {
        let port = free_port();
        let chromedriver = binary("CHROMEDRIVER", "/usr/bin/chromedriver");
        let driver = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {chromedriver} (make test installs chromium-driver): {e}"));
        let profile = std::env::temp_dir().join(format!("fraudsense-chromium-{port}-{}", std::process::id()));
        let browser = Self { client: Self::session(port, &profile).await, driver, profile };
        browser.client.set_window_size(1440, 900).await.unwrap_or_else(|e| panic!("{e}"));
        browser
    }

    async fn session(port: u16, profile: &std::path::Path) -> Client {
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": binary("CHROMIUM", "/usr/bin/chromium"),
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                    "--window-size=1440,900", format!("--user-data-dir={}", profile.display()),
                ],
            },
        });
        let Value::Object(capabilities) = capabilities else { unreachable!("an object literal") };
        let url = format!("http://127.0.0.1:{port}");
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        // chromedriver takes a moment to listen: retry the session until the deadline.
        eventually(DEADLINE, "chromedriver to open a session", || {
            let connector = connector.clone();
            let capabilities = capabilities.clone();
            let url = url.clone();
            async move {
                let mut builder = ClientBuilder::new(connector);
                builder.capabilities(capabilities);
                Ok(builder.connect(&url).await.ok())
            }
        })
        .await
        .unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// The element `css` selects (failing the test if there is none).
    pub async fn find(&self, css: &str) -> Element {
        self.client.find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("{css}: {e}"))
    }

    /// Clicks the element `css` selects, as a user would.
    pub async fn click(&self, css: &str) {
        self.find(css).await.click().await.unwrap_or_else(|e| panic!("clicking {css}: {e}"));
    }

    /// Runs `script` (a function body; `arguments` are `args`) in the page.
    pub async fn eval(&self, script: &str, args: Vec<Value>) -> Value {
        self.client.execute(script, args).await.unwrap_or_else(|e| panic!("{script}: {e}"))
    }

    /// Polls `script` until it returns something other than `null`/`false`, for at most `within`.
    pub async fn wait_for(
        &self,
        within: std::time::Duration,
        what: &str,
        script: &str,
        args: &[Value],
    ) -> Value {
        eventually(within, what, || async {
            let value = self.eval(script, args.to_vec()).await;
            Ok((!matches!(value, Value::Null | Value::Bool(false))).then_some(value))
        })
        .await
        .unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// Saves a PNG of the window as `name` in [`artifacts_dir`]; returns its path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.unwrap_or_else(|e| panic!("screenshot: {e}"));
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        let dir = artifacts_dir();
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let path = dir.join(name);
        std::fs::write(&path, png).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        path
    }

    /// Ends the session, chromedriver and the profile.
    pub async fn close(self) {
        let _ = self.client.clone().close().await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}
