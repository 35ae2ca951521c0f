//! Tests of the in-place instance reset that vendor/wasmtime adds
//! (`Instance::snapshot`, `InstanceSnapshot::restore`), on the engine the
//! host builds: hand-written components whose every piece of mutable state
//! a call can observe and then change, so that a state the reset missed
//! shows in the next call's answer.

use std::sync::{Arc, Mutex};

use wasmtime::component::{Component, Instance, InstanceSnapshot, Linker, TypedFunc};
use wasmtime::{PoolingAllocationConfig, Store};

/// A component whose `touch` reports, one bit each, whether it finds each
/// piece of its state as instantiated, then changes all of it: a global,
/// memory in its image and past it, the memory's size (and a page it grows
/// into), its table's size and an element, a passive data and element
/// segment (used, then dropped, when `drop` is set), and the component's
/// own handle table (a resource it creates and never drops).
const TOUCH: &str = r#"
(component
  (type $r (resource (rep i32)))
  (core func $new (canon resource.new $r))
  (core module $m
    (import "" "new" (func $new (param i32) (result i32)))
    (memory 1)
    (global $g (mut i32) (i32.const 7))
    (table $t 2 funcref)
    (func $five (result i32) i32.const 5)
    (elem (table $t) (i32.const 0) func $five)
    (elem $passive func $five)
    (data $passive_data "hello")
    (data (i32.const 16) "\2a")
    (func (export "touch") (param $drop i32) (result i32)
      (local $seen i32)
      (if (i32.eq (global.get $g) (i32.const 7))
        (then (local.set $seen (i32.or (local.get $seen) (i32.const 1)))))
      (if (i32.eq (i32.load8_u (i32.const 16)) (i32.const 42))
        (then (local.set $seen (i32.or (local.get $seen) (i32.const 2)))))
      (if (i32.eqz (i32.or (i32.load8_u (i32.const 100)) (i32.load8_u (i32.const 200))))
        (then (local.set $seen (i32.or (local.get $seen) (i32.const 4)))))
      (if (i32.eq (memory.size) (i32.const 1))
        (then (local.set $seen (i32.or (local.get $seen) (i32.const 8)))))
      (if (i32.eq (table.size $t) (i32.const 2))
        (then (local.set $seen (i32.or (local.get $seen) (i32.const 16)))))
      (if (ref.is_null (table.get $t (i32.const 1)))
        (then (local.set $seen (i32.or (local.get $seen) (i32.const 32)))))
      (if (i32.eq (call $new (i32.const 0)) (i32.const 1))
        (then (local.set $seen (i32.or (local.get $seen) (i32.const 64)))))
      (global.set $g (i32.add (global.get $g) (i32.const 1)))
      (i32.store8 (i32.const 16) (i32.const 0))
      (i32.store8 (i32.const 100) (i32.const 1))
      (drop (memory.grow (i32.const 1)))
      (if (i32.eqz (i32.load8_u (i32.const 65536)))
        (then (local.set $seen (i32.or (local.get $seen) (i32.const 128)))))
      (i32.store8 (i32.const 65536) (i32.const 9))
      (drop (table.grow $t (ref.null func) (i32.const 1)))
      (table.set $t (i32.const 1) (table.get $t (i32.const 0)))
      (if (local.get $drop)
        (then
          (memory.init $passive_data (i32.const 200) (i32.const 0) (i32.const 5))
          (data.drop $passive_data)
          (table.init $t $passive (i32.const 2) (i32.const 0) (i32.const 1))
          (elem.drop $passive)))
      (local.get $seen))
  )
  (core instance $i (instantiate $m (with "" (instance (export "new" (func $new))))))
  (func (export "touch") (param "drop" u32) (result u32) (canon lift (core func $i "touch")))
)
"#;

/// Every bit of `touch`'s answer: all state as instantiated.
const FRESH: u32 = 0xff;

/// A component whose start function sets a global: `bump` answers the
/// global, then sets it to 99.
const START_SETS_A_GLOBAL: &str = r#"
(component
  (core module $m
    (global $g (mut i32) (i32.const 0))
    (func $start (global.set $g (i32.const 3)))
    (start $start)
    (func (export "bump") (result i32) (global.get $g) (global.set $g (i32.const 99)))
  )
  (core instance $i (instantiate $m))
  (func (export "bump") (result u32) (canon lift (core func $i "bump")))
)
"#;

/// A component whose start function writes its memory, which a reset to
/// the memory's image would undo.
const START_WRITES_MEMORY: &str = r#"
(component
  (core module $m
    (memory 1)
    (func $start (i32.store8 (i32.const 8) (i32.const 1)))
    (start $start)
    (func (export "bump") (result i32) (i32.load8_u (i32.const 8)))
  )
  (core instance $i (instantiate $m))
  (func (export "bump") (result u32) (canon lift (core func $i "bump")))
)
"#;

/// A component whose start function makes a handle of its own resource and
/// keeps it in a global: a reset, which empties the handle tables, would
/// leave the global naming a handle that is gone.
const START_MAKES_A_HANDLE: &str = r#"
(component
  (type $r (resource (rep i32)))
  (core func $new (canon resource.new $r))
  (core module $m
    (import "" "new" (func $new (param i32) (result i32)))
    (global $h (mut i32) (i32.const 0))
    (func $start (global.set $h (call $new (i32.const 0))))
    (start $start)
    (func (export "bump") (result i32) (global.get $h))
  )
  (core instance $i (instantiate $m (with "" (instance (export "new" (func $new))))))
  (func (export "bump") (result u32) (canon lift (core func $i "bump")))
)
"#;

/// A component whose `run` sets a global, then calls the host's `reset`
/// import, then answers the global.
const CALLS_THE_HOST: &str = r#"
(component
  (import "reset" (func $reset))
  (core func $reset (canon lower (func $reset)))
  (core module $m
    (import "" "reset" (func $reset))
    (global $g (mut i32) (i32.const 0))
    (func (export "run") (result i32)
      (global.set $g (i32.const 5))
      (call $reset)
      (global.get $g))
  )
  (core instance $i (instantiate $m (with "" (instance (export "reset" (func $reset))))))
  (func (export "run") (result u32) (canon lift (core func $i "run")))
)
"#;

/// An instance of `wat` on the host's own engine, in a store whose epoch
/// deadline never passes.
fn instantiate(wat: &str) -> (Store<()>, Instance) {
    instantiate_with(wat, |_| {})
}

/// `instantiate`, with `link` adding the host functions `wat` imports.
fn instantiate_with(wat: &str, link: impl FnOnce(&mut Linker<()>)) -> (Store<()>, Instance) {
    assert!(
        PoolingAllocationConfig::is_pagemap_scan_available(),
        "the in-place reset needs PAGEMAP_SCAN (Linux 6.7+)"
    );
    let engine = super::new_engine(4).expect("engine");
    let component =
        Component::new(&engine, wat::parse_str(wat).expect("assemble")).expect("compile");
    let mut store = Store::new(&engine, ());
    store.set_epoch_deadline(u64::MAX);
    let mut linker = Linker::new(&engine);
    link(&mut linker);
    let instance = linker
        .instantiate(&mut store, &component)
        .expect("instantiate");
    (store, instance)
}

#[test]
fn a_reset_instance_finds_every_piece_of_its_state_as_instantiated() {
    let (mut store, instance) = instantiate(TOUCH);
    let mut snapshot = instance.snapshot(&mut store).expect("resettable");
    let touch = instance
        .get_typed_func::<(u32,), (u32,)>(&mut store, "touch")
        .expect("touch");
    for call in 0..5 {
        let (seen,) = touch.call(&mut store, (1,)).expect("no trap");
        assert_eq!(seen, FRESH, "call {call}: {seen:#010b}");
        snapshot.restore(&mut store).expect("restore");
    }
}

/// The control for the test above: without the reset, `touch` sees what the
/// call before it changed, so every bit it checks can tell.
#[test]
fn without_a_reset_the_next_call_sees_every_change() {
    let (mut store, instance) = instantiate(TOUCH);
    let touch = instance
        .get_typed_func::<(u32,), (u32,)>(&mut store, "touch")
        .expect("touch");
    assert_eq!(touch.call(&mut store, (1,)).expect("first call").0, FRESH);
    // Unchanged between calls: the page grown into (bit 7), which the
    // second call finds already written only because memory stayed grown.
    let (seen,) = touch.call(&mut store, (0,)).expect("second call");
    assert_eq!(seen, 0, "{seen:#010b}");
    // And the dropped data segment traps once used again.
    assert!(touch.call(&mut store, (1,)).is_err());
}

#[test]
fn a_reset_puts_back_what_the_start_function_left() {
    let (mut store, instance) = instantiate(START_SETS_A_GLOBAL);
    let mut snapshot = instance.snapshot(&mut store).expect("resettable");
    let bump = instance
        .get_typed_func::<(), (u32,)>(&mut store, "bump")
        .expect("bump");
    for _ in 0..3 {
        assert_eq!(bump.call(&mut store, ()).expect("bump").0, 3);
        snapshot.restore(&mut store).expect("restore");
    }
    assert_eq!(bump.call(&mut store, ()).expect("bump").0, 3);
    assert_eq!(bump.call(&mut store, ()).expect("bump").0, 99);
}

#[test]
fn an_instance_whose_start_function_wrote_its_memory_is_not_resettable() {
    let (mut store, instance) = instantiate(START_WRITES_MEMORY);
    let err = instance.snapshot(&mut store).expect_err("refused");
    assert!(
        format!("{err:#}").contains("is not as its image after instantiation"),
        "{err:#}"
    );
}

#[test]
fn an_instance_whose_start_function_made_a_handle_is_not_resettable() {
    let (mut store, instance) = instantiate(START_MAKES_A_HANDLE);
    let err = instance.snapshot(&mut store).expect_err("refused");
    assert!(format!("{err:#}").contains("left handles"), "{err:#}");
}

/// `restore` called from inside a call (here, by a host function the guest
/// calls) would pull the instance's state from under the running guest:
/// it is refused, and the guest goes on with its state untouched.
#[test]
fn a_reset_while_a_call_is_under_way_is_refused() {
    type Shared<T> = Arc<Mutex<Option<T>>>;
    let snapshot: Shared<InstanceSnapshot> = Shared::default();
    let refusal: Shared<String> = Shared::default();
    let (in_host, said) = (snapshot.clone(), refusal.clone());
    let (mut store, instance) = instantiate_with(CALLS_THE_HOST, move |linker| {
        linker
            .root()
            .func_wrap("reset", move |mut store, (): ()| {
                let mut snapshot = in_host.lock().expect("lock");
                let taken = snapshot.as_mut().expect("taken");
                let err = taken.restore(&mut store).expect_err("refused");
                *said.lock().expect("lock") = Some(format!("{err:#}"));
                Ok(())
            })
            .expect("link reset");
    });
    *snapshot.lock().expect("lock") = Some(instance.snapshot(&mut store).expect("resettable"));
    let run = instance
        .get_typed_func::<(), (u32,)>(&mut store, "run")
        .expect("run");
    assert_eq!(run.call(&mut store, ()).expect("run").0, 5);
    let refusal = refusal.lock().expect("lock").clone().expect("reset tried");
    assert!(refusal.contains("call under way"), "{refusal}");
}

/// A component whose `poke` answers the byte at `at` and adds one to it,
/// and whose `grow` grows its memory by a page. Its image has 42 at 16.
const POKE: &str = r#"
(component
  (core module $m
    (memory 2)
    (data (i32.const 16) "\2a")
    (func (export "poke") (param $at i32) (result i32)
      (local $was i32)
      (local.set $was (i32.load8_u (local.get $at)))
      (i32.store8 (local.get $at) (i32.add (local.get $was) (i32.const 1)))
      (local.get $was))
    (func (export "grow") (result i32) (memory.grow (i32.const 1)))
  )
  (core instance $i (instantiate $m))
  (func (export "poke") (param "at" u32) (result u32) (canon lift (core func $i "poke")))
  (func (export "grow") (result s32) (canon lift (core func $i "grow")))
)
"#;

/// Offsets in `POKE`'s memory: in its image, in its second wasm page, and
/// in the page `grow` adds.
const IN_IMAGE: u32 = 16;
const SECOND_PAGE: u32 = 70_000;
const GROWN_PAGE: u32 = 2 * 65_536 + 10;

/// `POKE`'s `poke` and `grow`.
type PokeAndGrow = (TypedFunc<(u32,), (u32,)>, TypedFunc<(), (i32,)>);

/// `POKE`'s two functions, on an instance of it.
fn poke_and_grow(store: &mut Store<()>, instance: &Instance) -> PokeAndGrow {
    let poke = instance.get_typed_func(&mut *store, "poke").expect("poke");
    let grow = instance.get_typed_func(&mut *store, "grow").expect("grow");
    (poke, grow)
}

#[test]
fn a_reset_of_the_known_pages_puts_back_what_the_last_scan_found() {
    let (mut store, instance) = instantiate(POKE);
    let mut snapshot = instance.snapshot(&mut store).expect("resettable");
    let (poke, _) = poke_and_grow(&mut store, &instance);
    for round in 0..4 {
        assert_eq!(poke.call(&mut store, (IN_IMAGE,)).expect("poke").0, 42);
        assert_eq!(poke.call(&mut store, (SECOND_PAGE,)).expect("poke").0, 0);
        let unscanned = snapshot.restore_known_pages(&mut store).expect("restore");
        // Only the first reset has no scan to go by.
        assert_eq!(unscanned, round > 0, "round {round}");
    }
}

/// The control for the test above: a page the last scan did not find, and
/// that the caller wrongly vouches was not written, is not put back. So the
/// reset above did go without a scan.
#[test]
fn a_reset_of_the_known_pages_trusts_that_no_other_page_was_written() {
    let (mut store, instance) = instantiate(POKE);
    let mut snapshot = instance.snapshot(&mut store).expect("resettable");
    let (poke, _) = poke_and_grow(&mut store, &instance);
    assert_eq!(poke.call(&mut store, (IN_IMAGE,)).expect("poke").0, 42);
    snapshot.restore(&mut store).expect("restore");
    assert_eq!(poke.call(&mut store, (SECOND_PAGE,)).expect("poke").0, 0);
    assert!(snapshot.restore_known_pages(&mut store).expect("restore"));
    assert_eq!(poke.call(&mut store, (SECOND_PAGE,)).expect("poke").0, 1);
    // A scan finds it.
    snapshot.restore(&mut store).expect("restore");
    assert_eq!(poke.call(&mut store, (SECOND_PAGE,)).expect("poke").0, 0);
    assert_eq!(poke.call(&mut store, (IN_IMAGE,)).expect("poke").0, 42);
}

/// A memory that grew since its last reset is scanned whatever the caller
/// vouches: growing makes pages writable that the last scan never saw.
#[test]
fn a_memory_grown_since_its_last_reset_is_scanned() {
    let (mut store, instance) = instantiate(POKE);
    let mut snapshot = instance.snapshot(&mut store).expect("resettable");
    let (poke, grow) = poke_and_grow(&mut store, &instance);
    assert_eq!(poke.call(&mut store, (IN_IMAGE,)).expect("poke").0, 42);
    snapshot.restore(&mut store).expect("restore");
    for _ in 0..3 {
        assert_eq!(grow.call(&mut store, ()).expect("grow").0, 2);
        assert_eq!(poke.call(&mut store, (GROWN_PAGE,)).expect("poke").0, 0);
        assert!(!snapshot.restore_known_pages(&mut store).expect("restore"));
    }
    // The scan of the grown memory found the grown page too, which is out
    // of reach after the reset: the next reset without a scan leaves it
    // alone (writing it would fault the host), and it reads zero once grown
    // into again.
    assert_eq!(poke.call(&mut store, (IN_IMAGE,)).expect("poke").0, 42);
    assert!(snapshot.restore_known_pages(&mut store).expect("restore"));
    assert_eq!(poke.call(&mut store, (IN_IMAGE,)).expect("poke").0, 42);
    assert_eq!(grow.call(&mut store, ()).expect("grow").0, 2);
    assert_eq!(poke.call(&mut store, (GROWN_PAGE,)).expect("poke").0, 0);
}
