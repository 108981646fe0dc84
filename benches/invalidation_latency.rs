//! Cross-instance cache invalidation latency: how long after instance A answers a
//! record update does instance B stop serving its cached copy of the record.
//!
//! Run by `benches/cluster.sh`, which starts A and B (one PostgreSQL schema, one Redis
//! key prefix, `cache.collections.bench_posts` cached) and passes `BENCH_A`, `BENCH_B`
//! (base URLs) and `BENCH_TOKEN` (a superuser token). Each round caches the record on
//! B (until B answers `X-Cache: HIT`), updates it on A, then polls B until it answers
//! with the new value. `ITERATIONS` rounds (default 500), at most `DURATION` seconds
//! when set. Prints p50/p90/p99/max from A's answer, and from the start of the update.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

const COLLECTION: &str = "bench_posts";

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        eprintln!("{name} is not set; run benches/cluster.sh");
        std::process::exit(2)
    })
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

fn main() {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(run());
}

/// The record's title and X-Cache as B answers them.
async fn view(client: &reqwest::Client, url: &str) -> (String, bool) {
    let response = client.get(url).send().await.expect("B answers");
    assert_eq!(response.status(), 200, "B: {url}");
    let hit = response
        .headers()
        .get("x-cache")
        .is_some_and(|value| value == "HIT");
    let record: Value = response.json().await.unwrap();
    (
        record["title"].as_str().unwrap_or_default().to_string(),
        hit,
    )
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

fn report(what: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{what:<28} p50 {:>7.2} ms   p90 {:>7.2} ms   p99 {:>7.2} ms   max {:>7.2} ms",
        ms(percentile(&samples, 0.50)),
        ms(percentile(&samples, 0.90)),
        ms(percentile(&samples, 0.99)),
        ms(*samples.last().unwrap()),
    );
}

async fn run() {
    let (a, b, token) = (env("BENCH_A"), env("BENCH_B"), env("BENCH_TOKEN"));
    let iterations = env_number("ITERATIONS", 500);
    let limit = Duration::from_secs(env_number("DURATION", 0));
    let client = reqwest::Client::new();

    let exists = client
        .get(format!("{a}/api/collections/{COLLECTION}"))
        .header("authorization", &token)
        .send()
        .await
        .unwrap();
    if exists.status() == 404 {
        let created = client
            .post(format!("{a}/api/collections"))
            .header("authorization", &token)
            .json(&json!({"name": COLLECTION, "listRule": "", "viewRule": "",
                          "fields": [{"name": "title", "type": "text"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 200, "creating {COLLECTION}");
    }
    let record: Value = client
        .post(format!("{a}/api/collections/{COLLECTION}/records"))
        .header("authorization", &token)
        .json(&json!({"title": "0"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = record["id"].as_str().expect("a record id").to_string();
    let on_a = format!("{a}/api/collections/{COLLECTION}/records/{id}");
    let on_b = format!("{b}/api/collections/{COLLECTION}/records/{id}");
    // B learns about the new collection through the bus.
    while client.get(&on_b).send().await.unwrap().status() != 200 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let started = Instant::now();
    let (mut after_answer, mut after_send) = (Vec::new(), Vec::new());
    let mut polls = 0u64;
    for round in 1..=iterations {
        if !limit.is_zero() && started.elapsed() >= limit {
            break;
        }
        let previous = (round - 1).to_string();
        loop {
            let (title, hit) = view(&client, &on_b).await;
            if hit && title == previous {
                break;
            }
        }
        let sent = Instant::now();
        let updated = client
            .patch(&on_a)
            .header("authorization", &token)
            .json(&json!({"title": round.to_string()}))
            .send()
            .await
            .unwrap();
        assert_eq!(updated.status(), 200, "updating on A");
        let answered = Instant::now();
        loop {
            polls += 1;
            if view(&client, &on_b).await.0 == round.to_string() {
                break;
            }
        }
        after_answer.push(answered.elapsed());
        after_send.push(sent.elapsed());
    }
    let rounds = after_answer.len();
    println!(
        "cross-instance invalidation: {rounds} rounds, {:.1} polls of B per round",
        polls as f64 / rounds.max(1) as f64
    );
    if rounds > 0 {
        report("from A's answer to B fresh", after_answer);
        report("from the update sent", after_send);
    }
}
