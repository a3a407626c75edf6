use super::*;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

const HOUR: Duration = Duration::from_secs(3600);

fn db(dir: &tempfile::TempDir) -> std::path::PathBuf {
    dir.path().join("sub").join("store.db")
}

#[tokio::test]
async fn quota_round_trip_and_overflow() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(&db(&dir), HOUR).unwrap();
    assert_eq!(store.quota_get("alice").await.unwrap().value, None);
    assert_eq!(store.quota_set("alice", 100).await.unwrap().value, 100);
    assert_eq!(store.quota_add("alice", -30).await.unwrap().value, 70);
    assert_eq!(store.quota_add("bob", 5).await.unwrap().value, 5);
    assert_eq!(store.quota_get("alice").await.unwrap().value, Some(70));
    assert!(matches!(
        store.quota_add("alice", i64::MAX).await,
        Err(StoreError::Overflow)
    ));
    assert_eq!(store.quota_get("alice").await.unwrap().value, Some(70));
    assert_eq!(
        store.quota_set("carol", i64::MIN).await.unwrap().value,
        i64::MIN
    );
    assert!(matches!(
        store.quota_add("carol", -1).await,
        Err(StoreError::Overflow)
    ));
    assert_eq!(
        store.quota_get("carol").await.unwrap().value,
        Some(i64::MIN)
    );
    let (a, b) = (
        store.quota_get("x").await.unwrap(),
        store.quota_add("x", 1).await.unwrap(),
    );
    assert!(b.seq > a.seq, "later commits have higher stamps");
    assert_eq!(
        store.quota_all().await.unwrap().value,
        vec![
            ("alice".to_string(), 70),
            ("bob".to_string(), 5),
            ("carol".to_string(), i64::MIN),
            ("x".to_string(), 1)
        ]
    );
}

#[tokio::test]
async fn open_failure_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let bad = file.join("store.db");
    match LocalStore::open(&bad, HOUR) {
        Err(StoreError::Backend(msg)) => assert!(msg.contains(&*bad.to_string_lossy())),
        _ => panic!("expected a Backend error"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_quota_adds_are_exact() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(&db(&dir), HOUR).unwrap();
    store.quota_set("c", 1_000_000).await.unwrap();
    let tasks: Vec<_> = (1..=500i64)
        .map(|k| {
            let store = store.clone();
            tokio::spawn(async move { store.quota_add("c", -k).await.unwrap().value })
        })
        .collect();
    let mut seen = std::collections::HashSet::new();
    for t in tasks {
        assert!(
            seen.insert(t.await.unwrap()),
            "two adds saw the same balance"
        );
    }
    assert_eq!(
        store.quota_get("c").await.unwrap().value,
        Some(1_000_000 - 500 * 501 / 2)
    );
}

#[tokio::test]
async fn survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let store = LocalStore::open(&path, HOUR).unwrap();
    store.quota_set("a", 10).await.unwrap();
    store.quota_add("a", 5).await.unwrap();
    assert_eq!(store.counter_add("k", 3600, 2), 2);
    assert_eq!(store.counter_add("k", 3600, 3), 5);
    let now = now_secs() / 3600 * 3600;
    store.counter_add("k", now, 7);
    store.flush().await.unwrap();
    store.counter_add("k", now, 1); // flushed by drop
    drop(store);

    let store = LocalStore::open(&path, HOUR).unwrap();
    assert_eq!(store.quota_get("a").await.unwrap().value, Some(15));
    assert_eq!(store.counter("k", now), 8);
    assert_eq!(
        store.counter("k", 3600),
        0,
        "windows older than two days are dropped"
    );
    assert_eq!(store.counter("other", now), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_on_one_file_stay_exact() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let start = now_secs();
    let a = LocalStore::open(&path, Duration::from_millis(10)).unwrap();
    let b = LocalStore::open(&path, Duration::from_millis(10)).unwrap();
    let mut tasks = Vec::new();
    for store in [a.clone(), b.clone()] {
        for i in 0..200 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                store.quota_add("shared", 1).await.unwrap();
                for _ in 0..5 {
                    store.counter_add("win", start, 1);
                }
                if i % 20 == 0 {
                    store.flush().await.unwrap();
                }
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    a.flush().await.unwrap();
    b.flush().await.unwrap();
    drop((a, b));

    let fresh = LocalStore::open(&path, HOUR).unwrap();
    assert_eq!(fresh.quota_get("shared").await.unwrap().value, Some(400));
    assert_eq!(fresh.counter("win", start), 2000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_never_undercount_while_flushing() {
    const THREADS: usize = 4;
    const ADDS: i64 = 20_000;
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(&db(&dir), HOUR).unwrap();
    let start = now_secs();
    let done = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..THREADS)
        .map(|_| {
            let (store, done) = (store.clone(), done.clone());
            std::thread::spawn(move || {
                let mut last = 0;
                for _ in 0..ADDS {
                    let v = store.counter_add("hot", start, 1);
                    assert!(v > last, "counter_add went from {last} to {v}");
                    last = v;
                }
                done.fetch_add(1, Ordering::SeqCst);
            })
        })
        .collect();
    let reader = {
        let (store, stop) = (store.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut last = 0;
            while !stop.load(Ordering::SeqCst) {
                let v = store.counter("hot", start);
                assert!(v >= last, "counter went from {last} to {v}");
                last = v;
            }
        })
    };
    let mut flushes = 0;
    while done.load(Ordering::SeqCst) < THREADS {
        store.flush().await.unwrap();
        flushes += 1;
    }
    store.flush().await.unwrap();
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.join().unwrap();
    }
    reader.join().unwrap();
    assert!(flushes > 0);
    assert_eq!(store.counter("hot", start), THREADS as i64 * ADDS);
    let fresh = LocalStore::open(&db(&dir), HOUR).unwrap();
    assert_eq!(fresh.counter("hot", start), THREADS as i64 * ADDS);
}
