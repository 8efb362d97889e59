//! In-process cost of answering one AdmissionReview (decode, plan, patch, encode), for the
//! cases that matter on a cluster's write path, beside a naive typed handler.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use k8s_openapi::api::apps::v1::Deployment;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};
use migration_injector::mutate::InjectorConfig;
use migration_injector::webhook::review::review;
use serde_json::Value;

const CREATE: &str = include_str!("../tests/fixtures/create-deployment.json");

fn fixtures() -> (String, String, String) {
    let annotated = CREATE.to_owned();
    let mut plain: Value = serde_json::from_str(CREATE).unwrap();
    plain["request"]["object"]["metadata"]["annotations"]
        .as_object_mut()
        .unwrap()
        .remove("migrations.io/image");
    // An UPDATE of an object that is already injected: the reinvocation / re-apply case.
    let reviewed = review(CREATE.as_bytes(), &InjectorConfig::default()).unwrap();
    let answer: Value = serde_json::from_slice(&reviewed.body).unwrap();
    use base64::Engine as _;
    let patch: json_patch::Patch = serde_json::from_slice(
        &base64::engine::general_purpose::STANDARD
            .decode(answer["response"]["patch"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap();
    let mut injected: Value = serde_json::from_str(CREATE).unwrap();
    json_patch::patch(&mut injected["request"]["object"], &patch).unwrap();
    injected["request"]["operation"] = "UPDATE".into();
    (annotated, plain.to_string(), injected.to_string())
}

fn naive_typed(body: &[u8]) -> Vec<u8> {
    let review: AdmissionReview<Deployment> = serde_json::from_slice(body).unwrap();
    let req: AdmissionRequest<Deployment> = review.try_into().unwrap();
    let obj = req.object.clone().unwrap();
    let before = serde_json::to_value(&obj).unwrap();
    let mut after = obj;
    if let Some(spec) = after.spec.as_mut().and_then(|s| s.template.spec.as_mut()) {
        spec.init_containers
            .get_or_insert_with(Vec::new)
            .push(Default::default());
    }
    let patch = json_patch::diff(&before, &serde_json::to_value(&after).unwrap());
    let response = AdmissionResponse::from(&req).with_patch(patch).unwrap();
    serde_json::to_vec(&response.into_review()).unwrap()
}

fn bench(c: &mut Criterion) {
    let config = InjectorConfig::default();
    let (annotated, plain, injected) = fixtures();
    let mut g = c.benchmark_group("review");
    g.bench_function("annotated create (mutated)", |b| {
        b.iter(|| review(black_box(annotated.as_bytes()), &config).unwrap())
    });
    g.bench_function("unannotated (no patch)", |b| {
        b.iter(|| review(black_box(plain.as_bytes()), &config).unwrap())
    });
    g.bench_function("already injected update (no patch)", |b| {
        b.iter(|| review(black_box(injected.as_bytes()), &config).unwrap())
    });
    g.bench_function("naive typed handler", |b| {
        b.iter(|| naive_typed(black_box(annotated.as_bytes())))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
