//! The race, the fallback, the breaker and the policy against a fake local engine
//! and a small fake HTTP server on loopback.

use std::sync::atomic::AtomicUsize;

use inkling_core::generate::StopReason;
use inkling_core::postprocess::Trigger;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;
use crate::policy::tests::request;

/// What the fake remote does with each request.
#[derive(Clone, Debug)]
enum Behaviour {
    /// Waits, then streams these llama.cpp infill texts (the last one ends the answer).
    Answer(Duration, Vec<&'static str>),
    /// Answers this status.
    Status(u16),
    /// Streams these texts, each after its delay in milliseconds (the last one ends
    /// the answer).
    Paced(Vec<(u64, &'static str)>),
    /// Accepts and never answers.
    Stall,
    /// Sends one event, then closes the connection mid-stream.
    DieMidStream,
    /// Answers 200 with garbage.
    Garbage,
    /// Redirects to itself (a client that follows comes back).
    RedirectToItself,
    /// Answers this status with the request's head in the body.
    Echo(u16),
}

struct FakeRemote {
    url: String,
    behaviour: Arc<Mutex<Behaviour>>,
    requests: Arc<AtomicUsize>,
    bodies: Arc<Mutex<Vec<String>>>,
}

impl FakeRemote {
    async fn start(behaviour: Behaviour) -> FakeRemote {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let behaviour = Arc::new(Mutex::new(behaviour));
        let requests = Arc::new(AtomicUsize::new(0));
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let (b, r, bs) = (behaviour.clone(), requests.clone(), bodies.clone());
        let itself = format!("{url}/infill");
        tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                let (b, r, bs, itself) = (b.clone(), r.clone(), bs.clone(), itself.clone());
                tokio::spawn(async move {
                    let mut data = Vec::new();
                    let mut buf = [0u8; 4096];
                    let body = loop {
                        let Ok(n) = socket.read(&mut buf).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        data.extend_from_slice(&buf[..n]);
                        let text = String::from_utf8_lossy(&data).to_string();
                        if let Some((head, body)) = text.split_once("\r\n\r\n") {
                            let length = head
                                .lines()
                                .find_map(|l| {
                                    l.to_ascii_lowercase()
                                        .strip_prefix("content-length: ")
                                        .map(|v| v.trim().parse::<usize>().unwrap())
                                })
                                .unwrap_or(0);
                            if body.len() >= length {
                                break text;
                            }
                        }
                    };
                    r.fetch_add(1, Ordering::SeqCst);
                    lock(&bs).push(body.clone());
                    let behaviour = lock(&b).clone();
                    let sse = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n";
                    match behaviour {
                        Behaviour::Answer(delay, texts) => {
                            tokio::time::sleep(delay).await;
                            let _ = socket.write_all(sse.as_bytes()).await;
                            for (i, text) in texts.iter().enumerate() {
                                let event = serde_json::json!({"content": text, "stop": i + 1 == texts.len()});
                                let _ = socket
                                    .write_all(format!("data: {event}\n\n").as_bytes())
                                    .await;
                            }
                        }
                        Behaviour::Paced(events) => {
                            let _ = socket.write_all(sse.as_bytes()).await;
                            for (i, (delay, text)) in events.iter().enumerate() {
                                tokio::time::sleep(Duration::from_millis(*delay)).await;
                                let event = serde_json::json!({"content": text, "stop": i + 1 == events.len()});
                                let _ = socket
                                    .write_all(format!("data: {event}\n\n").as_bytes())
                                    .await;
                            }
                        }
                        Behaviour::Status(status) => {
                            let body = "{\"error\": \"no\"}";
                            let _ = socket
                                .write_all(format!("HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len()).as_bytes())
                                .await;
                        }
                        Behaviour::Stall => tokio::time::sleep(Duration::from_secs(30)).await,
                        Behaviour::DieMidStream => {
                            let _ = socket.write_all(sse.as_bytes()).await;
                            let _ = socket
                                .write_all(b"data: {\"content\": \"x = \", \"stop\": false}\n\n")
                                .await;
                        }
                        Behaviour::Garbage => {
                            let _ = socket.write_all(sse.as_bytes()).await;
                            let _ = socket.write_all(b"data: <html>oops</html>\n\n").await;
                        }
                        Behaviour::Echo(status) => {
                            let head = body.split("\r\n\r\n").next().unwrap_or_default().to_owned();
                            let _ = socket
                                .write_all(format!("HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{head}", head.len()).as_bytes())
                                .await;
                        }
                        Behaviour::RedirectToItself => {
                            let _ = socket
                                .write_all(format!("HTTP/1.1 307 Temporary Redirect\r\nlocation: {itself}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").as_bytes())
                                .await;
                        }
                    }
                    let _ = socket.shutdown().await;
                });
            }
        });
        FakeRemote {
            url,
            behaviour,
            requests,
            bodies,
        }
    }

    fn set(&self, behaviour: Behaviour) {
        *lock(&self.behaviour) = behaviour;
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

/// A local engine answering `local()` after `delay`, stopping when cancelled; it
/// keeps the cancel flags it was given (the real engine's worker thread watches its
/// flag even after the future awaiting it is dropped).
#[derive(Clone)]
struct FakeLocal {
    delay: Arc<Mutex<Duration>>,
    /// Answers `NotReady` (a model not loaded) while set.
    not_ready: Arc<AtomicBool>,
    calls: Arc<AtomicUsize>,
    flags: Arc<Mutex<Vec<CancelFlag>>>,
}

impl FakeLocal {
    fn new(delay: Duration) -> FakeLocal {
        FakeLocal {
            delay: Arc::new(Mutex::new(delay)),
            not_ready: Arc::default(),
            calls: Arc::default(),
            flags: Arc::default(),
        }
    }

    fn set_delay(&self, delay: Duration) {
        *lock(&self.delay) = delay;
    }

    fn cancelled(&self) -> usize {
        lock(&self.flags)
            .iter()
            .filter(|f| f.is_cancelled())
            .count()
    }
}

impl Backend for FakeLocal {
    fn is_ready(&self) -> bool {
        true
    }

    async fn ready_within(&self, _: Duration) -> bool {
        !self.not_ready.load(Ordering::SeqCst)
    }

    async fn generate(&self, request: CompletionRequest) -> Result<Generation, BackendError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.not_ready.load(Ordering::SeqCst) {
            return Err(BackendError::NotReady);
        }
        lock(&self.flags).push(request.cancel.clone());
        let until = Instant::now() + *lock(&self.delay);
        while Instant::now() < until {
            if request.cancel.is_cancelled() {
                return Err(BackendError::Cancelled);
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Ok(generation("local()"))
    }
}

fn generation(text: &str) -> Generation {
    Generation {
        text: text.into(),
        prompt_tokens: 0,
        reused_tokens: 0,
        generated_tokens: 0,
        stop_reason: inkling_core::generate::StopReason::EndOfGeneration,
        build_time: Duration::ZERO,
        prompt_time: Duration::ZERO,
        generation_time: Duration::ZERO,
        alternatives: Vec::new(),
        token_ends: Vec::new(),
        short_prompt: false,
    }
}

/// `local` hedged against `remote` configured with `fields` (JSON object members).
fn configured(local: &FakeLocal, remote: &FakeRemote, fields: &str) -> Hedged<FakeLocal> {
    let remotes = Arc::new(Remotes::default());
    let json = format!(r#"{{"url": "{}"{fields}}}"#, remote.url);
    remotes.configure(Some(&json.parse().unwrap())).unwrap();
    Hedged::new(local.clone(), remotes)
}

/// The sentences `hedged` reports to the user from now on.
fn reports_of(hedged: &Hedged<FakeLocal>) -> Arc<Mutex<Vec<String>>> {
    let reports = Arc::new(Mutex::new(Vec::new()));
    let sink = reports.clone();
    hedged
        .remotes()
        .set_reporter(Arc::new(move |m| lock(&sink).push(m)));
    reports
}

/// With a fixed, short hedge delay and a quick breaker, and `extra` fields.
fn hedged(local: &FakeLocal, remote: &FakeRemote, extra: &str) -> Hedged<FakeLocal> {
    let fields = format!(
        r#", "triggers": "all", "hedgeDelayMs": 100, "firstTokenTimeoutMs": 1000, "breakerFailures": 2, "breakerOpenMs": 400{extra}"#
    );
    configured(local, remote, &fields)
}

/// Asks once; the local engine answers without a hedge delay waited.
async fn local_answers_at_once(hedged: &Hedged<FakeLocal>) {
    let started = Instant::now();
    assert_eq!(hedged.generate(invoked()).await.unwrap().text, "local()");
    assert!(
        started.elapsed() < Duration::from_millis(100),
        "{:?}",
        started.elapsed()
    );
}

fn invoked() -> CompletionRequest {
    request("file:///w/a.rs", Trigger::Invoked, "\n}\n")
}

#[tokio::test]
async fn a_fast_remote_answers_and_the_local_engine_never_starts() {
    let remote = FakeRemote::start(Behaviour::Answer(Duration::ZERO, vec!["remote", "()"])).await;
    let local = FakeLocal::new(Duration::from_millis(50));
    let hedged = hedged(&local, &remote, "");
    let answer = hedged.generate(invoked()).await.unwrap();
    assert_eq!(answer.text, "remote()");
    assert_eq!(local.calls.load(Ordering::SeqCst), 0);
    let snapshot = hedged.remotes().snapshot();
    assert_eq!((snapshot.stats.remote.wins, snapshot.stats.hedges), (1, 0));
    assert_eq!(snapshot.stats.last_source, Some(Source::Remote));
    assert!(lock(&remote.bodies)[0].contains("\"input_suffix\""));
}

#[tokio::test]
async fn a_stalled_remote_loses_to_local_soon_after_the_hedge_delay() {
    let remote = FakeRemote::start(Behaviour::Stall).await;
    let local = FakeLocal::new(Duration::from_millis(50));
    let hedged = hedged(&local, &remote, "");
    let started = Instant::now();
    let answer = hedged.generate(invoked()).await.unwrap();
    let took = started.elapsed();
    assert_eq!(answer.text, "local()");
    assert!(
        took >= Duration::from_millis(150) && took < Duration::from_millis(600),
        "{took:?}"
    );
    let snapshot = hedged.remotes().snapshot();
    assert_eq!((snapshot.stats.hedges, snapshot.stats.local.wins), (1, 1));
    // Not even a first token before local answered, under the configured hedge delay:
    // a failure, as a timeout would be.
    assert_eq!(snapshot.stats.remote.failures, 1);
    assert_eq!(snapshot.breaker, Some("closed"));
    // The second such race opens the breaker: the next request goes local at once,
    // without waiting the hedge delay for a remote that does not answer.
    hedged.generate(invoked()).await.unwrap();
    assert_eq!(hedged.remotes().snapshot().breaker, Some("open"));
    local_answers_at_once(&hedged).await;
    assert_eq!(remote.requests(), 2);
}

#[tokio::test]
async fn a_remote_that_streams_but_loses_the_race_is_no_failure() {
    // Its first token after the hedge delay (100 ms) but before local's answer
    // (at 200 ms), its whole answer after that.
    let remote = FakeRemote::start(Behaviour::Paced(vec![
        (120, "remote("),
        (120, "slowly"),
        (120, ")"),
    ]))
    .await;
    let local = FakeLocal::new(Duration::from_millis(100));
    let hedged = hedged(&local, &remote, "");
    for _ in 0..3 {
        hedged.generate(invoked()).await.unwrap();
    }
    let snapshot = hedged.remotes().snapshot();
    assert_eq!(snapshot.stats.remote.failures, 0);
    assert_eq!(snapshot.breaker, Some("closed"));
    // Its first tokens still tell how fast it is.
    assert_eq!(snapshot.stats.remote.first_token.len(), 3);
}

/// Runs local requests (for files the deny-list keeps local) until local's median
/// is measured.
async fn measure_local(hedged: &Hedged<FakeLocal>) {
    for _ in 0..ADAPT_AFTER {
        let denied = request("file:///w/secret/a.rs", Trigger::Invoked, "\n}\n");
        hedged.generate(denied).await.unwrap();
    }
}

/// A remote measured at 150 ms to its answer, and local at 40 ms: local goes first.
async fn remote_measured_slower() -> (FakeRemote, FakeLocal, Hedged<FakeLocal>) {
    let remote = FakeRemote::start(Behaviour::Answer(
        Duration::from_millis(150),
        vec!["remote()"],
    ))
    .await;
    let local = FakeLocal::new(Duration::ZERO);
    let fields = r#", "triggers": "all", "denyPaths": ["**/secret/**"]"#;
    let hedged = configured(&local, &remote, fields);
    // Unmeasured, the remote races local at once: with local slow here, it wins.
    assert_eq!(hedged.remotes().snapshot().hedge_delay(), Duration::ZERO);
    local.set_delay(Duration::from_secs(5));
    for _ in 0..ADAPT_AFTER {
        assert_eq!(hedged.generate(invoked()).await.unwrap().text, "remote()");
    }
    local.set_delay(Duration::from_millis(40));
    measure_local(&hedged).await;
    let Some(Order::LocalFirst(local_p95)) = hedged.remotes().snapshot().order else {
        panic!("{:?}", hedged.remotes().snapshot().order);
    };
    assert!(local_p95 >= Duration::from_millis(40) && local_p95 < Duration::from_millis(150));
    (remote, local, hedged)
}

#[tokio::test]
async fn a_remote_slower_than_local_hedges_locals_tail_and_is_probed_now_and_then() {
    let (_remote, local, hedged) = remote_measured_slower().await;
    let before = hedged.remotes().snapshot().stats;
    // Local answers well within its p95: the remote is not asked, but by the probe.
    local.set_delay(Duration::from_millis(5));
    for _ in 0..PROBE_EVERY {
        local_answers_at_once(&hedged).await;
    }
    let snapshot = hedged.remotes().snapshot();
    assert_eq!(snapshot.stats.local_first, PROBE_EVERY - 1);
    assert_eq!(snapshot.stats.remote.requests, before.remote.requests + 1);
    // The probe raced both at once: local won, and the remote's time was sampled
    // (at least what it had).
    assert_eq!(
        snapshot.stats.remote.first_token.len(),
        before.remote.first_token.len() + 1
    );
    // Outrun under the adaptive delay: slower, not failed.
    assert_eq!(snapshot.stats.remote.failures, 0);
    assert_eq!(snapshot.breaker, Some("closed"));
    // Local slower than its p95: the remote starts too, and wins when it is faster
    // by then; its time is not sampled (a late start is outrun by design, and its
    // wins would be the fast ones).
    local.set_delay(Duration::from_secs(5));
    let started = Instant::now();
    assert_eq!(hedged.generate(invoked()).await.unwrap().text, "remote()");
    assert!(started.elapsed() < Duration::from_millis(1000));
    let after = hedged.remotes().snapshot().stats;
    assert_eq!(after.hedges, snapshot.stats.hedges + 1);
    assert_eq!(
        after.remote.first_token.len(),
        snapshot.stats.remote.first_token.len()
    );
}

#[tokio::test]
async fn a_remote_quick_to_its_first_token_but_slow_to_answer_goes_second() {
    // Its first token at once, its whole answer after 200 ms; local's in 40 ms.
    let remote = FakeRemote::start(Behaviour::Paced(vec![(0, "remote"), (200, "()")])).await;
    let local = FakeLocal::new(Duration::from_millis(40));
    let hedged = configured(&local, &remote, r#", "triggers": "all""#);
    for _ in 0..ADAPT_AFTER {
        assert_eq!(hedged.generate(invoked()).await.unwrap().text, "local()");
    }
    // Going first on its first token, it would hold every answer for 200 ms.
    assert!(
        hedged
            .remotes()
            .snapshot()
            .stats
            .remote
            .first_token
            .quantile(0.9)
            < Duration::from_millis(40)
    );
    assert!(matches!(
        hedged.remotes().snapshot().order,
        Some(Order::LocalFirst(_))
    ));
}

#[tokio::test]
async fn with_local_first_a_local_engine_not_ready_leaves_the_request_to_the_remote_at_once() {
    let (remote, local, hedged) = remote_measured_slower().await;
    remote.set(Behaviour::Answer(Duration::ZERO, vec!["remote()"]));
    local.not_ready.store(true, Ordering::SeqCst);
    let hedges = hedged.remotes().snapshot().stats.hedges;
    let started = Instant::now();
    assert_eq!(hedged.generate(invoked()).await.unwrap().text, "remote()");
    // Not after local's p95 (>= 40 ms): at once.
    assert!(
        started.elapsed() < Duration::from_millis(35),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(hedged.remotes().snapshot().stats.hedges, hedges);
}

#[tokio::test]
async fn the_breakers_probe_reaches_the_remote_even_when_local_would_go_first() {
    let (_remote, _local, hedged) = remote_measured_slower().await;
    let configured = lock(&hedged.remotes().remote).clone().unwrap();
    assert!(matches!(
        hedged.order_now(&configured, Admission::Allowed),
        Order::LocalFirst(_)
    ));
    assert_eq!(
        hedged.order_now(&configured, Admission::Probe),
        Order::RemoteFirst(Duration::ZERO)
    );
}

#[tokio::test]
async fn a_race_dropped_while_it_probes_the_breaker_leaves_no_probe_out() {
    let remote = FakeRemote::start(Behaviour::Status(500)).await;
    let local = FakeLocal::new(Duration::from_millis(10));
    let hedged = hedged(&local, &remote, "");
    for _ in 0..2 {
        hedged.generate(invoked()).await.unwrap();
    }
    assert_eq!(hedged.remotes().snapshot().breaker, Some("open"));
    tokio::time::sleep(Duration::from_millis(450)).await;
    // The probe's request is dropped (a newer keystroke cancelled it) before either
    // engine answered.
    remote.set(Behaviour::Stall);
    local.set_delay(Duration::from_secs(5));
    let dropped = tokio::time::timeout(Duration::from_millis(50), hedged.generate(invoked()));
    assert!(dropped.await.is_err());
    // The next request probes.
    remote.set(Behaviour::Answer(Duration::ZERO, vec!["remote()"]));
    assert_eq!(hedged.generate(invoked()).await.unwrap().text, "remote()");
    assert_eq!(hedged.remotes().snapshot().breaker, Some("closed"));
}

#[tokio::test]
async fn the_measurements_of_a_replaced_remote_are_forgotten() {
    let (_remote, _local, hedged) = remote_measured_slower().await;
    let other = FakeRemote::start(Behaviour::Answer(Duration::ZERO, vec!["remote()"])).await;
    let json = format!(r#"{{"url": "{}", "triggers": "all"}}"#, other.url);
    hedged
        .remotes()
        .configure(Some(&json.parse().unwrap()))
        .unwrap();
    assert_eq!(
        hedged.remotes().snapshot().order,
        Some(Order::RemoteFirst(Duration::ZERO))
    );
}

#[tokio::test]
async fn a_slow_remote_that_became_fast_goes_first_again() {
    let (remote, local, hedged) = remote_measured_slower().await;
    remote.set(Behaviour::Answer(Duration::ZERO, vec!["remote()"]));
    local.set_delay(Duration::from_millis(10));
    // The probes measure it again; once its recent p90 is under local's median it
    // goes first.
    let mut requests = 0;
    while matches!(
        hedged.remotes().snapshot().order,
        Some(Order::LocalFirst(_))
    ) {
        hedged.generate(invoked()).await.unwrap();
        requests += 1;
        assert!(requests <= 2 * RECENT as u64 * PROBE_EVERY, "{requests}");
    }
    assert!(matches!(
        hedged.remotes().snapshot().order,
        Some(Order::RemoteFirst(_))
    ));
    assert_eq!(hedged.generate(invoked()).await.unwrap().text, "remote()");
}

#[tokio::test]
async fn a_stalled_remote_under_the_adaptive_delay_costs_local_nothing_and_is_not_locked_out() {
    let remote = FakeRemote::start(Behaviour::Stall).await;
    let local = FakeLocal::new(Duration::from_millis(20));
    let hedged = configured(&local, &remote, r#", "triggers": "all""#);
    for _ in 0..ADAPT_AFTER {
        local_answers_at_once(&hedged).await;
    }
    // What it was given, at least, is its time to first token: no faster than local,
    // which now goes first.
    assert!(matches!(
        hedged.remotes().snapshot().order,
        Some(Order::LocalFirst(_))
    ));
    for _ in 0..PROBE_EVERY {
        local_answers_at_once(&hedged).await;
    }
    let snapshot = hedged.remotes().snapshot();
    // Not locked out: the probe asked it again, and it would win any race it is
    // faster at.
    assert!(snapshot.stats.remote.requests > ADAPT_AFTER as u64);
    assert_eq!(
        (snapshot.stats.remote.failures, snapshot.breaker),
        (0, Some("closed"))
    );
}

#[tokio::test]
async fn a_slow_remote_that_answers_first_wins_and_cancels_local() {
    let remote = FakeRemote::start(Behaviour::Answer(
        Duration::from_millis(150),
        vec!["remote()"],
    ))
    .await;
    let local = FakeLocal::new(Duration::from_secs(5));
    let hedged = hedged(&local, &remote, "");
    let answer = hedged.generate(invoked()).await.unwrap();
    assert_eq!(answer.text, "remote()");
    assert_eq!(local.calls.load(Ordering::SeqCst), 1);
    assert_eq!(local.cancelled(), 1);
}

#[tokio::test]
async fn a_remote_whose_first_token_came_in_time_is_not_hedged_while_it_streams() {
    // First token at once, the rest after the hedge delay: no local leg.
    let remote = FakeRemote::start(Behaviour::Paced(vec![(0, "remote"), (300, "()")])).await;
    let local = FakeLocal::new(Duration::from_millis(10));
    let hedged = hedged(&local, &remote, "");
    let answer = hedged.generate(invoked()).await.unwrap();
    assert_eq!(answer.text, "remote()");
    assert_eq!(local.calls.load(Ordering::SeqCst), 0);
    assert_eq!(hedged.remotes().snapshot().stats.hedges, 0);
}

#[tokio::test]
async fn failures_fall_back_to_local_and_open_the_breaker_until_a_probe_succeeds() {
    let remote = FakeRemote::start(Behaviour::Status(500)).await;
    let local = FakeLocal::new(Duration::from_millis(10));
    let hedged = hedged(&local, &remote, "");
    for behaviour in [Behaviour::Status(500), Behaviour::Garbage] {
        remote.set(behaviour);
        // No hedge delay waited: the failure started local at once.
        local_answers_at_once(&hedged).await;
    }
    let snapshot = hedged.remotes().snapshot();
    assert_eq!(
        (
            snapshot.breaker,
            snapshot.breaker_trips,
            snapshot.stats.fallbacks
        ),
        (Some("open"), 1, 2)
    );
    remote.set(Behaviour::Answer(Duration::ZERO, vec!["remote()"]));
    assert_eq!(hedged.generate(invoked()).await.unwrap().text, "local()");
    assert_eq!(remote.requests(), 2, "an open breaker sends nothing");
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(hedged.generate(invoked()).await.unwrap().text, "remote()");
    assert_eq!(hedged.remotes().snapshot().breaker, Some("closed"));
}

#[tokio::test]
async fn a_remote_dying_mid_stream_falls_back_to_local() {
    let remote = FakeRemote::start(Behaviour::DieMidStream).await;
    let local = FakeLocal::new(Duration::from_millis(10));
    let hedged = hedged(&local, &remote, "");
    assert_eq!(hedged.generate(invoked()).await.unwrap().text, "local()");
    assert_eq!(hedged.remotes().snapshot().stats.fallbacks, 1);
}

#[tokio::test]
async fn a_configuration_mistake_is_reported_once_and_not_retried() {
    let remote = FakeRemote::start(Behaviour::Status(400)).await;
    let local = FakeLocal::new(Duration::from_millis(10));
    let hedged = hedged(&local, &remote, "");
    let reports = reports_of(&hedged);
    for _ in 0..3 {
        assert_eq!(hedged.generate(invoked()).await.unwrap().text, "local()");
    }
    assert_eq!(remote.requests(), 1);
    assert_eq!(lock(&reports).len(), 1);
    assert!(lock(&reports)[0].contains("400"), "{:?}", lock(&reports));
    assert_eq!(hedged.remotes().snapshot().breaker, Some("closed"));
}

#[tokio::test]
async fn denied_paths_and_background_work_never_reach_the_remote() {
    let remote = FakeRemote::start(Behaviour::Answer(Duration::ZERO, vec!["remote()"])).await;
    let local = FakeLocal::new(Duration::ZERO);
    let hedged = hedged(&local, &remote, r#", "denyPaths": ["**/secret/**"]"#);
    let denied = request("file:///w/secret/a.rs", Trigger::Invoked, "\n}\n");
    assert_eq!(hedged.generate(denied).await.unwrap().text, "local()");
    let mut background = invoked();
    background.background = true;
    assert_eq!(hedged.generate(background).await.unwrap().text, "local()");
    assert_eq!(remote.requests(), 0);
    assert_eq!(hedged.remotes().snapshot().stats.denied, 1);
}

#[tokio::test]
async fn the_users_cancel_stops_both_legs() {
    let remote = FakeRemote::start(Behaviour::Stall).await;
    let local = FakeLocal::new(Duration::from_secs(5));
    let hedged = hedged(&local, &remote, "");
    let request = invoked();
    let cancel = request.cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        cancel.cancel();
    });
    let started = Instant::now();
    assert_eq!(hedged.generate(request).await, Err(BackendError::Cancelled));
    assert!(started.elapsed() < Duration::from_millis(400));
    assert_eq!(local.cancelled(), 1);
}

#[tokio::test]
async fn the_hedge_delay_adapts_to_the_remotes_first_tokens() {
    let remote = FakeRemote::start(Behaviour::Answer(
        Duration::from_millis(40),
        vec!["remote()"],
    ))
    .await;
    let local = FakeLocal::new(Duration::from_secs(5));
    let hedged = configured(&local, &remote, "");
    assert_eq!(hedged.remotes().snapshot().hedge_delay(), Duration::ZERO);
    for _ in 0..ADAPT_AFTER {
        hedged.generate(invoked()).await.unwrap();
    }
    let adapted = hedged.remotes().snapshot().hedge_delay();
    assert!(
        adapted >= Duration::from_millis(40) && adapted < Duration::from_millis(200),
        "{adapted:?}"
    );
}

#[tokio::test]
async fn an_empty_remote_answer_leaves_the_answer_to_local() {
    let remote = FakeRemote::start(Behaviour::Answer(Duration::ZERO, vec![""])).await;
    let local = FakeLocal::new(Duration::from_millis(10));
    let hedged = hedged(&local, &remote, "");
    assert_eq!(hedged.generate(invoked()).await.unwrap().text, "local()");
    let snapshot = hedged.remotes().snapshot();
    assert_eq!(
        (snapshot.stats.remote.empty, snapshot.stats.remote.failures),
        (1, 0)
    );
    assert_eq!(snapshot.breaker, Some("closed"));
}

#[tokio::test]
async fn a_remote_answer_post_processing_empties_leaves_the_answer_to_local() {
    // The line above again: post-processing shows nothing of it.
    let text = "fn main() {";
    let request = invoked();
    assert_eq!(
        postprocess::finish(text, &request.context, &request.stop),
        None
    );
    let remote = FakeRemote::start(Behaviour::Answer(Duration::ZERO, vec![text])).await;
    let local = FakeLocal::new(Duration::from_millis(10));
    let hedged = hedged(&local, &remote, "");
    assert_eq!(hedged.generate(request).await.unwrap().text, "local()");
    let snapshot = hedged.remotes().snapshot();
    assert_eq!(
        (snapshot.stats.remote.empty, snapshot.stats.remote.wins),
        (1, 0)
    );
}

#[tokio::test]
async fn a_request_too_large_for_the_remote_is_answered_locally_and_the_remote_stays_in_use() {
    let remote = FakeRemote::start(Behaviour::Status(413)).await;
    let local = FakeLocal::new(Duration::from_millis(10));
    let hedged = hedged(&local, &remote, "");
    let reports = reports_of(&hedged);
    // As many refusals as the breaker's threshold (2): neither a trip nor a report.
    for _ in 0..2 {
        assert_eq!(hedged.generate(invoked()).await.unwrap().text, "local()");
    }
    remote.set(Behaviour::Answer(Duration::ZERO, vec!["remote()"]));
    assert_eq!(hedged.generate(invoked()).await.unwrap().text, "remote()");
    remote.set(Behaviour::Status(413));
    for _ in 0..REFUSALS_TO_REPORT - 1 {
        assert_eq!(hedged.generate(invoked()).await.unwrap().text, "local()");
    }
    assert!(lock(&reports).is_empty(), "{:?}", lock(&reports));
    let snapshot = hedged.remotes().snapshot();
    assert_eq!(
        (snapshot.breaker, snapshot.breaker_trips),
        (Some("closed"), 0)
    );
    // Refused every time in a row: its context is smaller than our prompts.
    assert_eq!(hedged.generate(invoked()).await.unwrap().text, "local()");
    assert_eq!(lock(&reports).len(), 1);
    assert!(
        lock(&reports)[0].contains("too large"),
        "{:?}",
        lock(&reports)
    );
    let requests = remote.requests();
    hedged.generate(invoked()).await.unwrap();
    assert_eq!(remote.requests(), requests);
}

#[tokio::test]
async fn the_first_token_timeout_fails_a_stalled_remote_while_local_is_still_working() {
    let remote = FakeRemote::start(Behaviour::Stall).await;
    // Local is slower than the first-token timeout: the timeout, not local's answer,
    // ends the remote leg.
    let local = FakeLocal::new(Duration::from_millis(600));
    let hedged = configured(
        &local,
        &remote,
        r#", "triggers": "all", "hedgeDelayMs": 100, "firstTokenTimeoutMs": 150, "breakerFailures": 2"#,
    );
    assert_eq!(hedged.generate(invoked()).await.unwrap().text, "local()");
    let snapshot = hedged.remotes().snapshot();
    assert_eq!(
        (snapshot.stats.remote.failures, snapshot.stats.fallbacks),
        (1, 1)
    );
    hedged.generate(invoked()).await.unwrap();
    assert_eq!(hedged.remotes().snapshot().breaker, Some("open"));
}

#[tokio::test]
async fn at_the_total_timeout_the_text_so_far_is_the_answer() {
    let remote = FakeRemote::start(Behaviour::Paced(vec![
        (0, "remote"),
        (50, "("),
        (2000, ")"),
    ]))
    .await;
    let local = FakeLocal::new(Duration::from_secs(5));
    let hedged = hedged(&local, &remote, r#", "totalTimeoutMs": 400"#);
    let started = Instant::now();
    let answer = hedged.generate(invoked()).await.unwrap();
    assert!(started.elapsed() < Duration::from_millis(1500));
    assert_eq!(
        (answer.text.as_str(), answer.stop_reason),
        ("remote(", inkling_core::generate::StopReason::TimeLimit)
    );
    // Not a failure: a remote that used all its time, as a local generation limit.
    assert_eq!(hedged.remotes().snapshot().stats.remote.failures, 0);
}

#[tokio::test]
async fn a_redirect_is_not_followed_but_reported() {
    let remote = FakeRemote::start(Behaviour::RedirectToItself).await;
    let local = FakeLocal::new(Duration::from_millis(10));
    let hedged = hedged(&local, &remote, "");
    let reports = reports_of(&hedged);
    for _ in 0..2 {
        assert_eq!(hedged.generate(invoked()).await.unwrap().text, "local()");
    }
    // The fake counts every request it gets: a followed redirect would come back.
    assert_eq!(remote.requests(), 1);
    assert!(
        lock(&reports)[0].contains("redirects"),
        "{:?}",
        lock(&reports)
    );
}

#[tokio::test]
async fn the_key_and_the_affinity_header_are_sent() {
    // A variable every test environment has stands for the key.
    let key = std::env::var("PATH").unwrap();
    let remote = FakeRemote::start(Behaviour::Answer(Duration::ZERO, vec!["remote()"])).await;
    let local = FakeLocal::new(Duration::from_secs(5));
    let hedged = hedged(
        &local,
        &remote,
        r#", "apiKeyEnv": "PATH", "affinityHeader": "X-Session-ID""#,
    );
    assert_eq!(hedged.generate(invoked()).await.unwrap().text, "remote()");
    let sent = lock(&remote.bodies)[0].to_lowercase();
    assert!(
        sent.contains(&format!("authorization: bearer {}", key.to_lowercase())),
        "{sent}"
    );
    assert!(sent.contains("x-session-id: inkling-"), "{sent}");
}

#[tokio::test]
async fn a_local_model_that_failed_to_load_leaves_requests_to_the_remote() {
    let remote = FakeRemote::start(Behaviour::Answer(Duration::ZERO, vec!["remote()"])).await;
    let local = FakeLocal::new(Duration::ZERO);
    local.not_ready.store(true, Ordering::SeqCst);
    let hedged = hedged(&local, &remote, "");
    assert!(hedged.ready_within(Duration::ZERO).await);
    assert_eq!(hedged.generate(invoked()).await.unwrap().text, "remote()");
    // What the policy keeps local gets no answer, as without a remote.
    let mut background = invoked();
    background.background = true;
    assert_eq!(
        hedged.generate(background).await.unwrap_err(),
        BackendError::NotReady
    );
    // Without a usable remote, not ready.
    hedged.remotes().configure(None).unwrap();
    assert!(!hedged.ready_within(Duration::ZERO).await);
}

/// The failure of one request to the remote `remotes` holds, as a message shows it.
async fn failure_of(remotes: &Remotes) -> String {
    let configured = lock(&remotes.remote).clone().unwrap();
    client::stream(
        &configured.http,
        &configured.policy,
        &invoked(),
        &watch::channel(None).0,
    )
    .await
    .unwrap_err()
    .to_string()
}

#[tokio::test]
async fn a_remote_echoing_the_key_does_not_get_it_shown() {
    // A variable every test environment has stands for the key.
    let key = std::env::var("PATH").unwrap();
    for status in [401, 500] {
        let remote = FakeRemote::start(Behaviour::Echo(status)).await;
        let local = FakeLocal::new(Duration::from_millis(10));
        let hedged = hedged(&local, &remote, r#", "apiKeyEnv": "PATH""#);
        let reports = reports_of(&hedged);
        let failed = failure_of(hedged.remotes()).await;
        assert!(failed.contains("[the API key]"), "{failed}");
        assert!(!failed.contains(&key), "{failed}");
        assert_eq!(hedged.generate(invoked()).await.unwrap().text, "local()");
        for report in lock(&reports).iter() {
            assert!(!report.contains(&key), "{report}");
        }
    }
}

#[tokio::test]
async fn a_remote_that_cannot_be_asked_as_configured_is_reported_once_and_sent_nothing() {
    // An API key variable not set; an audit log that cannot record the request.
    for (field, named) in [
        (
            r#", "apiKeyEnv": "INKLING_TEST_KEY_NEVER_SET""#,
            "INKLING_TEST_KEY_NEVER_SET",
        ),
        (
            r#", "auditLog": "/nonexistent-folder/audit.log""#,
            "audit log",
        ),
    ] {
        let remote = FakeRemote::start(Behaviour::Answer(Duration::ZERO, vec!["remote()"])).await;
        let local = FakeLocal::new(Duration::from_millis(10));
        let hedged = hedged(&local, &remote, field);
        let reports = reports_of(&hedged);
        for _ in 0..2 {
            assert_eq!(hedged.generate(invoked()).await.unwrap().text, "local()");
        }
        assert_eq!(remote.requests(), 0, "{field}");
        assert_eq!(lock(&reports).len(), 1, "{field}");
        assert!(lock(&reports)[0].contains(named), "{:?}", lock(&reports));
    }
}

#[tokio::test]
async fn a_remote_the_settings_replace_mid_race_is_not_waited_for_nor_used() {
    let remote = FakeRemote::start(Behaviour::Answer(
        Duration::from_millis(400),
        vec!["remote()"],
    ))
    .await;
    let local = FakeLocal::new(Duration::from_millis(50));
    let hedged = Arc::new(configured(
        &local,
        &remote,
        r#", "triggers": "all", "hedgeDelayMs": 10000"#,
    ));
    let racing = hedged.clone();
    let answer = tokio::spawn(async move { racing.generate(invoked()).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    hedged.remotes().configure(None).unwrap();
    // Not after the hedge delay, and not the remote's late answer: local's.
    let answer = tokio::time::timeout(Duration::from_secs(5), answer)
        .await
        .expect("not held for the hedge delay")
        .unwrap()
        .unwrap();
    assert_eq!(answer.text, "local()");
    assert_eq!(hedged.remotes().snapshot().stats.remote.wins, 0);
}

#[tokio::test]
async fn a_remote_streaming_far_past_the_tokens_asked_for_is_cut() {
    // Distinct words (no run the degenerate-text rules stop), 30 KB in all, where 64
    // tokens were asked for.
    let mut seed = 7u32;
    let words: Vec<&'static str> = (0..5000)
        .map(|_| {
            let word: String = (0..5)
                .map(|_| {
                    seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                    char::from(b'a' + (seed >> 16) as u8 % 26)
                })
                .collect();
            &*Box::leak(format!("{word} ").into_boxed_str())
        })
        .collect();
    let remote = FakeRemote::start(Behaviour::Answer(Duration::ZERO, words.clone())).await;
    let local = FakeLocal::new(Duration::from_secs(5));
    let hedged = hedged(&local, &remote, "");
    let request = invoked();
    let most = request.max_tokens as usize * 64;
    let answer = hedged.generate(request).await.unwrap();
    assert!(
        answer.text.starts_with(words[0]),
        "{:?}",
        &answer.text[..20]
    );
    assert!(
        (most..most + 8).contains(&answer.text.len()),
        "{} bytes",
        answer.text.len()
    );
    assert_eq!(answer.stop_reason, StopReason::TokenLimit);
}

#[tokio::test]
async fn a_key_in_the_url_query_is_not_shown_when_the_remote_echoes_it() {
    let token = "query-token-0123456789";
    let remote = FakeRemote::start(Behaviour::Echo(500)).await;
    let remotes = Arc::new(Remotes::default());
    let json = format!(
        r#"{{"url": "{}/?token={token}", "triggers": "all"}}"#,
        remote.url
    );
    remotes.configure(Some(&json.parse().unwrap())).unwrap();
    let failed = failure_of(&remotes).await;
    // The echoed request line held it.
    assert!(failed.contains("[the API key]"), "{failed}");
    assert!(!failed.contains(token), "{failed}");
    let shown = remotes.snapshot().endpoint.unwrap();
    assert!(
        !shown.contains(token) && shown.ends_with("token=hidden"),
        "{shown}"
    );
}
