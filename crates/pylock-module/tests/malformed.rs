//! Bad input at scale. The core's parser against an independent model of the contract
//! (`pylock_check::malformed`), over many generated argument lists; and thousands of malformed
//! commands against live servers, which must stay up, change no key, and answer each with a
//! reply the contract allows.

use proptest::prelude::*;
use pylock_check::checker::Rng;
use pylock_check::malformed::{self, Allowed, KeyState};
use pylock_core::{Acquire, CommandError, Confirm, Info, Release, Watch};
use testkit::{server_tests, Kind, Server};

const NOW: i64 = 1_800_000_000_000;

/// What the module's parsing answers for `args` (argv, name first): `Ok` or the error text.
fn core_parse(args: &[Vec<u8>]) -> Option<Result<(), String>> {
    let name = String::from_utf8_lossy(args.first()?).to_ascii_lowercase();
    let rest: &[Vec<u8>] = args.get(2..).unwrap_or(&[]);
    let short = args.len() < 2;
    let text = |e: CommandError, n: &str| e.message(n);
    Some(match name.as_str() {
        "pylock.acquire" if short => Err(text(CommandError::WrongArity, Acquire::NAME)),
        "pylock.acquire" => Acquire::parse(rest, NOW)
            .map(|_| ())
            .map_err(|e| text(e, Acquire::NAME)),
        "pylock.confirm" if short => Err(text(CommandError::WrongArity, Confirm::NAME)),
        "pylock.confirm" => Confirm::parse(rest, NOW)
            .map(|_| ())
            .map_err(|e| text(e, Confirm::NAME)),
        "pylock.release" if short => Err(text(CommandError::WrongArity, Release::NAME)),
        "pylock.release" => Release::parse(rest)
            .map(|_| ())
            .map_err(|e| text(e, Release::NAME)),
        "pylock.watch" if short => Err(text(CommandError::WrongArity, Watch::NAME)),
        "pylock.watch" => Watch::parse(rest)
            .map(|_| ())
            .map_err(|e| text(e, Watch::NAME)),
        "pylock.info" if short => Err(text(CommandError::WrongArity, Info::NAME)),
        "pylock.info" => Info::parse(rest)
            .map(|_| ())
            .map_err(|e| text(e, Info::NAME)),
        _ => return None,
    })
}

/// Checks the core against the model for one argument list; `Err` describes a disagreement.
fn agree(args: &[Vec<u8>]) -> Result<(), String> {
    let Some(core) = core_parse(args) else {
        return Ok(());
    };
    // On a free key, a command with no argument error has a non-error outcome (or NOTHELD).
    let exp = malformed::expect(args, &KeyState::Free, NOW);
    let model_errors: Vec<&String> = exp
        .allowed
        .iter()
        .filter_map(|a| match a {
            Allowed::Error(t) => Some(t),
            _ => None,
        })
        .collect();
    let model_accepts = exp.allowed.iter().any(|a| !matches!(a, Allowed::Error(_)));
    let ok = match &core {
        Ok(()) => model_accepts,
        Err(text) => model_errors.contains(&text),
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{:?}: core {core:?}, model allows {:?}",
            args.iter()
                .map(|a| String::from_utf8_lossy(a)
                    .chars()
                    .take(40)
                    .collect::<String>())
                .collect::<Vec<_>>(),
            exp.allowed
        ))
    }
}

#[test]
fn core_parser_agrees_with_the_model_on_generated_commands() {
    let count: u64 = std::env::var("PYLOCK_FUZZ_PARSE_COUNT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(50_000);
    let keys: Vec<Vec<u8>> = vec![b"k".to_vec(), Vec::new()];
    let mut rng = Rng::new(0xfa57);
    let mut failures = Vec::new();
    for _ in 0..count {
        let args = malformed::generate(&mut rng, &keys, NOW);
        if let Err(e) = agree(&args) {
            failures.push(e);
        }
    }
    assert!(
        failures.is_empty(),
        "{} disagreements, e.g.:\n{}",
        failures.len(),
        failures[..failures.len().min(10)].join("\n")
    );
}

fn token() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(b"LEASE".to_vec()),
        Just(b"lease".to_vec()),
        Just(b"BLOCK".to_vec()),
        Just(b"EXTEND".to_vec()),
        Just(b"eXtEnD".to_vec()),
        Just(b"CLAIM".to_vec()),
        Just(b"cLaIm".to_vec()),
        Just(b"TIMEOUT".to_vec()),
        Just(b"timeout".to_vec()),
        Just(b"a".to_vec()),
        Just(b"a".to_vec()),
        Just(b"NX".to_vec()),
        Just(b"0".to_vec()),
        Just(b"1".to_vec()),
        Just(b"-1".to_vec()),
        Just(b"01".to_vec()),
        Just(b"-0".to_vec()),
        Just(b"+5".to_vec()),
        Just(b"".to_vec()),
        Just(i64::MAX.to_string().into_bytes()),
        Just(i64::MIN.to_string().into_bytes()),
        Just((i64::MAX - NOW).to_string().into_bytes()),
        Just((i64::MAX - NOW + 1).to_string().into_bytes()),
        Just(b"9223372036854775808".to_vec()),
        Just(vec![b'x'; 128]),
        Just(vec![b'x'; 129]),
        any::<i64>().prop_map(|n| n.to_string().into_bytes()),
        proptest::collection::vec(any::<u8>(), 0..40),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    /// Shrinkable counterexamples: any argument list from these tokens, for every command.
    #[test]
    fn core_parser_agrees_with_the_model(
        name in prop_oneof![Just("PYLOCK.ACQUIRE"), Just("pylock.confirm"), Just("PYLOCK.RELEASE"), Just("PYLOCK.INFO"), Just("PYLOCK.WATCH")],
        rest in proptest::collection::vec(token(), 0..8),
    ) {
        let mut args = vec![name.as_bytes().to_vec(), b"k".to_vec()];
        args.extend(rest);
        prop_assert!(agree(&args).is_ok(), "{}", agree(&args).unwrap_err());
    }
}

/// Commands per server in the suite; `scripts/fuzz-commands` sends more.
fn count() -> u64 {
    std::env::var("PYLOCK_FUZZ_COUNT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000)
}

server_tests! {
    fn claim_and_watch_bad_inputs_get_the_contract_errors_and_change_nothing(kind: Kind) {
        let s = Server::start(kind);
        let cases = malformed::claim_and_watch_bad_inputs();
        let violations = malformed::check_named_cases(&s, &cases);
        println!("{}: {} named CLAIM/WATCH cases", kind.name(), cases.len());
        assert!(violations.is_empty(), "{}", violations.join("\n"));
    }

    fn malformed_commands_get_contract_replies_and_change_nothing(kind: Kind) {
        let s = Server::start(kind);
        let seed = 0xbad_1000 + (kind == Kind::Valkey) as u64;
        let report = malformed::run(&s, count(), seed);
        let summary = report.summary();
        println!("{} / seed {seed}:\n{summary}", kind.name());
        assert!(report.violations.is_empty(), "{summary}");
        assert_eq!(report.sent, count());
        let mut con = s.conn();
        let pong: String = testkit::redis::cmd("PING").query(&mut con).unwrap();
        assert_eq!(pong, "PONG");
    }
}
