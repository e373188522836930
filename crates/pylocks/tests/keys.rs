//! The key format, against the vectors every client shares, and the arity check that comes
//! before any network call.

use std::time::Duration;

use pylocks::{Error, LockFactory};
use testkit::{server_tests, Server};

#[test]
fn keys_match_the_shared_vectors() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../testdata/key-vectors.json"
    );
    let text = std::fs::read_to_string(path).expect("read testdata/key-vectors.json");
    let doc: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    let vectors = doc["vectors"].as_array().expect("a `vectors` array");
    assert!(vectors.len() >= 10, "the file has the vectors");
    assert!(
        vectors.iter().any(|v| v.get("root_prefix").is_none()),
        "some vectors use the default root prefix"
    );
    for (i, v) in vectors.iter().enumerate() {
        let prefix = v["prefix"].as_str().expect("prefix");
        let arity = v["arity"].as_u64().expect("arity") as usize;
        let parts: Vec<&str> = v["parts"]
            .as_array()
            .expect("parts")
            .iter()
            .map(|p| p.as_str().expect("string part"))
            .collect();
        let want = v["key"].as_str().expect("key");
        let mut builder = LockFactory::builder(prefix, Duration::from_secs(1)).arity(arity);
        // No field: the factory's default root prefix; null: none; a string: that one.
        match v.get("root_prefix") {
            None => {}
            Some(serde_json::Value::Null) => builder = builder.no_root_prefix(),
            Some(root) => builder = builder.root_prefix(root.as_str().expect("root_prefix")),
        }
        let factory = builder.build().expect("factory");
        let got = factory
            .key(&parts)
            .unwrap_or_else(|e| panic!("vector {i}: {e}"));
        assert_eq!(got, want, "vector {i}: {v}");
    }
}

#[test]
fn the_root_prefix_defaults_to_pylocks_as_in_the_original() {
    let f = LockFactory::builder("person", Duration::from_secs(1))
        .build()
        .unwrap();
    assert_eq!(f.key([42]).unwrap(), "pylocks:person:42");
    assert_eq!(pylocks::DEFAULT_ROOT_PREFIX, "pylocks");
    let bare = LockFactory::builder("person", Duration::from_secs(1))
        .no_root_prefix()
        .build()
        .unwrap();
    assert_eq!(bare.key([42]).unwrap(), "person:42");
}

#[test]
fn distinct_part_tuples_never_share_a_key() {
    let f = LockFactory::builder("p", Duration::from_secs(1))
        .arity(2)
        .build()
        .unwrap();
    let tuples = [
        ["a:b", "c"],
        ["a", "b:c"],
        ["a\\", "b"],
        ["a", "\\b"],
        ["a\\:", "b"],
        ["a", ":b"],
    ];
    let keys: std::collections::HashSet<String> =
        tuples.iter().map(|t| f.key(t).unwrap()).collect();
    assert_eq!(keys.len(), tuples.len(), "{keys:?}");
}

#[test]
fn ttl_under_a_millisecond_is_refused() {
    let err = LockFactory::builder("p", Duration::from_micros(500))
        .build()
        .unwrap_err();
    assert!(matches!(err, Error::InvalidTtl { .. }), "{err}");
}

server_tests! {
    fn wrong_arity_fails_before_any_network_call(kind: Kind) {
        let s = Server::start(kind);
        let mut con = s.conn();
        let f = LockFactory::builder("person", Duration::from_secs(60))
            .arity(2)
            .build()
            .unwrap();
        let calls = || s.info("commandstats", "cmdstat_pylock.acquire");
        let err = f.acquire(&mut con, ["only-one"]).unwrap_err();
        assert!(matches!(err, Error::Arity { expected: 2, got: 1 }), "{err}");
        let err = f.get_handle(&mut con, ["a", "b", "c"], "lease").unwrap_err();
        assert!(matches!(err, Error::Arity { expected: 2, got: 3 }), "{err}");
        assert_eq!(calls(), None, "no PYLOCK.ACQUIRE reached the server");
        assert_eq!(s.info("commandstats", "cmdstat_pylock.confirm"), None);
        // The same factory does reach the server with the right number of parts.
        let h = f.acquire(&mut con, ["a", "b"]).unwrap();
        assert_eq!(h.key(), "pylocks:person:a:b", "the default root prefix");
        assert!(calls().is_some_and(|c| c.starts_with("calls=1,")), "{:?}", calls());
    }
}
