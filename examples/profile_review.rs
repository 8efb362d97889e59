//! Runs `admission::review` on a fixture in a loop, for profilers (callgrind, perf).
//! Usage: profile_review FIXTURE [ITERATIONS]
fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .unwrap_or_else(|| "tests/fixtures/create-deployment.json".into());
    let n: usize = args.next().unwrap_or_else(|| "10000".into()).parse()?;
    let body = std::fs::read(path)?;
    let config = migration_injector::mutate::InjectorConfig::default();
    let mut total = 0;
    for _ in 0..n {
        total += migration_injector::webhook::review::review(std::hint::black_box(&body), &config)?
            .body
            .len();
    }
    println!("{total}");
    Ok(())
}
