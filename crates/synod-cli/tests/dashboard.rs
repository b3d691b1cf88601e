//! The dashboard in a real browser: Debian's chromium, headless, driven
//! over its DevTools protocol. The page must load, show the leader, show a
//! new leader within seconds after the leader's process is killed, and
//! replay a protocol lab scenario to its verdict.
//!
//! `.ci/run` installs chromium; without it the test says so and skips.
//! `SYNOD_DASHBOARD_SCREENSHOT=docs/dashboard.png` saves what the browser
//! showed (how the screenshot under docs/ was made).

mod common;

use common::{bounded, Cluster};
use headless_chrome::protocol::cdp::Page::CaptureScreenshotFormatOption;
use headless_chrome::{Browser, LaunchOptions, Tab};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where Debian's chromium lives.
fn chromium() -> Option<PathBuf> {
    [
        "/usr/bin/chromium",
        "/usr/bin/chromium-browser",
        "/usr/bin/google-chrome",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
}

/// The value of a JavaScript expression in the page, as a string.
fn js(tab: &Tab, expression: &str) -> String {
    let value = tab
        .evaluate(expression, false)
        .unwrap_or_else(|e| panic!("{expression}: {e}"))
        .value;
    match value {
        Some(serde_json::Value::String(s)) => s,
        Some(v) => v.to_string(),
        None => String::new(),
    }
}

/// Polls `expression` until `done` accepts its value.
fn wait_for(
    tab: &Tab,
    what: &str,
    limit: Duration,
    expression: &str,
    done: impl Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + limit;
    let mut last = String::new();
    while Instant::now() < deadline {
        last = js(tab, expression);
        if done(&last) {
            return last;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("{what}: not within {limit:?} (last value {last:?})");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_shows_the_leader_and_a_new_one_after_a_kill() {
    let Some(chrome) = chromium() else {
        eprintln!("chromium not installed (Debian package chromium): skipped");
        return;
    };
    bounded("the dashboard in a browser", Duration::from_secs(150), async {
        let mut cluster = Cluster::start(3);
        let leader = cluster.wait_ready().await;
        let watcher = cluster.ids().into_iter().find(|i| *i != leader).unwrap();
        let url = format!("{}/", cluster.http_url(watcher));
        let browser = tokio::task::block_in_place(|| {
            Browser::new(
                LaunchOptions::default_builder()
                    .path(Some(chrome))
                    .headless(true)
                    // Tests run as root in CI, where chromium's sandbox
                    // cannot start.
                    .sandbox(false)
                    .window_size(Some((1400, 1500)))
                    .idle_browser_timeout(Duration::from_secs(120))
                    .build()
                    .expect("launch options"),
            )
            .expect("chromium starts")
        });
        let tab: Arc<Tab> = tokio::task::block_in_place(|| {
            let tab = browser.new_tab().expect("a tab");
            tab.navigate_to(&url).expect("navigate");
            tab.wait_until_navigated().expect("page loads");
            tab
        });
        let leader_expr = "document.getElementById('leader').dataset.leader || ''";
        tokio::task::block_in_place(|| {
            wait_for(&tab, "the page to name the leader", Duration::from_secs(15), leader_expr, |l| {
                l == leader.to_string()
            });
            let status = js(&tab, "document.getElementById('status').textContent");
            assert_eq!(status, "live", "the page follows the server-sent events");
            let rows = js(&tab, "document.querySelectorAll('#members tbody tr').length");
            assert_eq!(rows, "3");
            // Each node refreshes its own line every 100 ms.
            wait_for(
                &tab,
                "the roles to settle",
                Duration::from_secs(10),
                "[...document.querySelectorAll('#members tbody tr')].map(r => r.dataset.role).sort().join(',')",
                |roles| roles == "follower,follower,leader",
            );
        });
        let killed_at = Instant::now();
        cluster.kill(leader);
        tokio::task::block_in_place(|| {
            let new = wait_for(
                &tab,
                "the page to show a new leader",
                Duration::from_secs(20),
                leader_expr,
                |l| !l.is_empty() && l != leader.to_string(),
            );
            eprintln!(
                "the page showed node {new} leading {:.1} s after node {leader} was killed",
                killed_at.elapsed().as_secs_f64()
            );
            wait_for(
                &tab,
                "the dead member marked unreachable",
                Duration::from_secs(10),
                &format!("document.querySelector('#members tr[data-node=\"{leader}\"]').dataset.role"),
                |r| r == "unreachable",
            );
            let events = js(&tab, "document.getElementById('events').textContent");
            assert!(events.contains(&format!("node {new} leads")), "{events}");
            // The lab: every protocol listed; one scenario replayed to its verdict.
            wait_for(&tab, "the lab's protocols", Duration::from_secs(10),
                "document.querySelectorAll('#lab-protocol option').length", |n| n == "6");
            wait_for(&tab, "a lab run loaded", Duration::from_secs(10),
                "document.getElementById('lab-pos').textContent", |p| p.starts_with("step 0 of"));
            let steps: usize = js(&tab, "String(lab.run.steps.length)").parse().unwrap();
            assert!(steps > 0);
            let verdict = js(&tab, "document.getElementById('lab-verdict').textContent");
            assert_eq!(verdict, "(replay to the end)");
            for _ in 0..steps {
                js(&tab, "document.getElementById('lab-next').click(), ''");
            }
            let verdict = js(&tab, "document.getElementById('lab-verdict').textContent");
            let expected = js(&tab, "lab.run.verdict.kind");
            assert!(verdict.starts_with(&format!("{expected}:")), "{verdict}");
            // Step back: the verdict hides again until the end.
            js(&tab, "document.getElementById('lab-prev').click(), ''");
            let verdict = js(&tab, "document.getElementById('lab-verdict').textContent");
            assert_eq!(verdict, "(replay to the end)");
            js(&tab, "document.getElementById('lab-next').click(), ''");
            if let Ok(path) = std::env::var("SYNOD_DASHBOARD_SCREENSHOT") {
                // Some load for the charts, the lab half replayed, the
                // top of the page in view.
                let endpoints: Vec<String> = cluster
                    .running()
                    .into_iter()
                    .map(|id| cluster.addrs(id).client.to_string())
                    .collect();
                let status = std::process::Command::new(common::synod_bin())
                    .args(["bench", "--workload", "mixed", "--clients", "8", "--duration", "6s"])
                    .args(["--warmup", "0s", "--endpoints", &endpoints.join(",")])
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .status()
                    .expect("synod bench runs");
                assert!(status.success());
                js(&tab, "document.getElementById('lab-first').click(), ''");
                for _ in 0..steps / 2 {
                    js(&tab, "document.getElementById('lab-next').click(), ''");
                }
                js(&tab, "window.scrollTo(0, 0), ''");
                let png = tab
                    .capture_screenshot(CaptureScreenshotFormatOption::Png, None, None, true)
                    .expect("screenshot");
                std::fs::write(&path, png).expect("write the screenshot");
                eprintln!("screenshot saved to {path}");
            }
        });
        drop(browser);
    })
    .await;
}
