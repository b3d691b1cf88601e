//! `synod shards`: the shard map as one node sees it, read from its HTTP
//! endpoint (`/api/shards`) and printed as a table or as JSON.

use anyhow::{bail, Context, Result};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Flags of `synod shards`.
#[derive(clap::Args, Debug)]
pub struct ShardsArgs {
    /// A node's HTTP address (its --metrics-addr; `synod dev` serves the
    /// first node's on 127.0.0.1:2381).
    #[arg(long, default_value = "127.0.0.1:2381")]
    endpoint: String,
    /// Print the node's JSON as it is.
    #[arg(long)]
    json: bool,
}

/// The largest answer read (a map of 1,024 shards is well below).
const ANSWER_MAX: usize = 16 << 20;

/// Flags of `synod split`.
#[derive(clap::Args, Debug)]
pub struct SplitArgs {
    /// The split point: the first key of the new shard. It must lie
    /// strictly inside a shard (not at its start).
    key: String,
    /// A node's HTTP address (its --metrics-addr; `synod dev` serves the
    /// first node's on 127.0.0.1:2381).
    #[arg(long, default_value = "127.0.0.1:2381")]
    endpoint: String,
}

/// `synod split KEY`: one node asks the shard holding KEY to split there,
/// and prints the range that stayed and the new shard's group.
pub async fn split(args: SplitArgs) -> Result<()> {
    let (status, body) = http(&args.endpoint, "POST", "/api/split", args.key.as_bytes()).await?;
    let answer: Value = serde_json::from_str(&body)
        .with_context(|| format!("{} did not answer with JSON", args.endpoint))?;
    if status != 200 {
        bail!(
            "the split was refused: {}",
            answer["error"].as_str().unwrap_or(&body)
        );
    }
    println!(
        "split at {:?}: keys from there on are group {}'s (epoch {})",
        args.key, answer["new_group"], answer["epoch"]
    );
    Ok(())
}

pub async fn run(args: ShardsArgs) -> Result<()> {
    let body = get(&args.endpoint, "/api/shards").await?;
    let map: Value = serde_json::from_str(&body)
        .with_context(|| format!("{} did not answer with JSON", args.endpoint))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&map)?);
        return Ok(());
    }
    print!("{}", table(&map));
    Ok(())
}

/// The shards as aligned columns, one line each.
fn table(map: &Value) -> String {
    if map["sharded"] != Value::Bool(true) {
        return "not sharded: group 1 holds every key (start nodes with --split-at)\n".into();
    }
    let mut rows = vec![[
        "GROUP",
        "START",
        "END",
        "LEADER",
        "REVISION",
        "APPLIED",
        "BYTES",
        "EPOCH",
        "VOTERS",
        "OBSERVERS",
    ]
    .map(String::from)];
    for s in map["shards"].as_array().into_iter().flatten() {
        let text = |v: &Value| match v {
            Value::String(s) => format!("{s:?}"),
            Value::Null => "-".into(),
            Value::Array(a) => a
                .iter()
                .map(|x| x.to_string())
                .collect::<Vec<_>>()
                .join(","),
            other => other.to_string(),
        };
        let end = match &s["end"] {
            Value::Null => "(end)".into(),
            v => text(v),
        };
        rows.push([
            text(&s["group"]),
            text(&s["start"]),
            end,
            text(&s["leader"]),
            text(&s["revision"]),
            text(&s["applied"]),
            text(&s["bytes"]),
            text(&s["epoch"]),
            text(&s["voters"]),
            text(&s["observers"]),
        ]);
    }
    let widths: Vec<usize> = (0..10)
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in &rows {
        let cells: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// One HTTP/1.0 GET that must answer 200.
async fn get(endpoint: &str, path: &str) -> Result<String> {
    let (status, body) = http(endpoint, "GET", path, &[]).await?;
    if status != 200 {
        bail!("{endpoint} answered {status}");
    }
    Ok(body)
}

/// One HTTP/1.0 request: the node's endpoint is plain HTTP on a private
/// address, and one request needs no client library. The status and the
/// body.
async fn http(endpoint: &str, method: &str, path: &str, body: &[u8]) -> Result<(u16, String)> {
    let connect = tokio::net::TcpStream::connect(endpoint);
    let mut stream = tokio::time::timeout(std::time::Duration::from_secs(5), connect)
        .await
        .with_context(|| format!("connecting to {endpoint} timed out"))?
        .with_context(|| {
            format!("cannot connect to {endpoint} (is it a node's --metrics-addr?)")
        })?;
    let request = format!(
        "{method} {path} HTTP/1.0\r\nHost: {endpoint}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    stream.write_all(body).await?;
    let mut answer = Vec::new();
    let mut limited = (&mut stream).take(ANSWER_MAX as u64);
    let read = limited.read_to_end(&mut answer);
    tokio::time::timeout(std::time::Duration::from_secs(10), read)
        .await
        .with_context(|| format!("{endpoint} did not answer in time"))??;
    let answer = String::from_utf8(answer).context("the answer is not UTF-8")?;
    let Some((head, body)) = answer.split_once("\r\n\r\n") else {
        bail!("{endpoint} sent no HTTP answer");
    };
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok());
    match status {
        Some(status) if head.starts_with("HTTP/1.") => Ok((status, body.to_string())),
        _ => bail!(
            "{endpoint} answered {}",
            head.lines().next().unwrap_or_default()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_map_prints_one_aligned_line_per_shard() {
        let map = serde_json::json!({
            "sharded": true,
            "shards": [
                {"group": 2, "start": "", "end": "m", "leader": 1, "revision": 7, "applied": 9, "voters": [1, 2, 3], "observers": [4]},
                {"group": 3, "start": "m", "end": null, "leader": 2, "revision": 12, "applied": 4, "voters": [1, 2, 3], "observers": []},
            ]
        });
        let t = table(&map);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("GROUP  START  END"));
        assert!(lines[0].ends_with("VOTERS  OBSERVERS"));
        assert!(
            lines[1].contains("\"m\"") && lines[1].ends_with("1,2,3   4"),
            "{t}"
        );
        assert!(
            lines[2].contains("(end)") && lines[2].ends_with("1,2,3"),
            "{t}"
        );
        assert!(table(&serde_json::json!({"sharded": false})).starts_with("not sharded"));
    }
}
