use super::*;
use crate::store::{CheckpointInfo, SlotProblem, SlotStatus};
use proptest::prelude::*;
use std::vec;
use std::vec::Vec;

const MODEL: ModelId = ModelId(0x5eed_0000_0000_0001);
const OTHER: ModelId = ModelId(0x0bad_0000_0000_0002);

fn payload(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

type Flash<'a> = SimulatedNorFlash<'a, 4, 256>;

fn load(flash: &mut [u8], slot_size: u32, model: ModelId) -> Option<Vec<u8>> {
    let mut sim = Flash::new(flash);
    let mut store = CheckpointStore::new(&mut sim, 0, slot_size).unwrap();
    let mut buf = vec![0u8; store.capacity()];
    let info = store.load(model, &mut buf).unwrap()?;
    Some(buf[..info.len()].to_vec())
}

fn save(flash: &mut [u8], slot_size: u32, model: ModelId, data: &[u8]) -> CheckpointInfo {
    let mut sim = Flash::new(flash);
    let mut store = CheckpointStore::new(&mut sim, 0, slot_size).unwrap();
    let info = store.save(model, &[data]).unwrap();
    assert_eq!(sim.rewrites(), 0);
    info
}

#[test]
fn the_flash_keeps_nor_rules() {
    let mut bytes = [0xFFu8; 512];
    let mut sim = Flash::new(&mut bytes);
    sim.write(0, &[0x0F, 0xF0, 0xAA, 0x55]).unwrap();
    // Writing can only clear bits: 0x0F & 0xF0 = 0.
    sim.write(0, &[0xF0, 0xFF, 0xFF, 0xFF]).unwrap();
    let mut got = [0u8; 4];
    sim.read(0, &mut got).unwrap();
    assert_eq!(got, [0x00, 0xF0, 0xAA, 0x55]);
    assert_eq!(sim.rewrites(), 1);
    assert_eq!(sim.write(2, &[0; 4]), Err(SimFlashError::NotAligned));
    assert_eq!(sim.write(508, &[0; 8]), Err(SimFlashError::OutOfBounds));
    assert_eq!(sim.erase(0, 100), Err(SimFlashError::NotAligned));
    assert_eq!(sim.erase(256, 0), Err(SimFlashError::OutOfBounds));
    sim.erase(0, 256).unwrap();
    sim.read(0, &mut got).unwrap();
    assert_eq!(got, [0xFF; 4]);
    assert_eq!(sim.steps(), 4 + 4 + 1);
}

#[test]
fn a_power_cut_stops_everything_until_reboot() {
    let mut bytes = [0xFFu8; 512];
    let cut = PowerCut {
        after_steps: 6,
        torn: false,
    };
    let mut sim = Flash::with_power_cut(&mut bytes, cut);
    sim.write(0, &[0; 4]).unwrap();
    assert_eq!(sim.write(4, &[0; 4]), Err(SimFlashError::PowerLost));
    assert!(!sim.is_powered());
    assert_eq!(sim.read(0, &mut [0; 1]), Err(SimFlashError::PowerLost));
    assert_eq!(sim.erase(0, 256), Err(SimFlashError::PowerLost));
    // Two bytes of the second word made it, the rest did not.
    assert_eq!(bytes[..8], [0, 0, 0, 0, 0, 0, 0xFF, 0xFF]);
}

#[test]
fn torn_cuts_leave_words_half_programmed_and_sectors_half_erased() {
    let mut bytes = [0xFFu8; 512];
    let cut = PowerCut {
        after_steps: 1,
        torn: true,
    };
    let mut sim = Flash::with_power_cut(&mut bytes, cut);
    assert_eq!(sim.write(0, &[0; 4]), Err(SimFlashError::PowerLost));
    assert_eq!(bytes[..4], [0x00, 0x55, 0x55, 0x55]);

    let mut bytes = [0u8; 512];
    let cut = PowerCut {
        after_steps: 1,
        torn: true,
    };
    let mut sim = Flash::with_power_cut(&mut bytes, cut);
    assert_eq!(sim.erase(0, 512), Err(SimFlashError::PowerLost));
    assert!(bytes[..256].iter().all(|&b| b == 0xFF));
    assert!(bytes[256..384].iter().all(|&b| b == 0xFF));
    assert!(bytes[384..].iter().all(|&b| b == 0x55));
}

#[test]
fn saves_alternate_slots_and_the_newest_wins() {
    let mut flash = vec![0xFFu8; 2048];
    assert_eq!(load(&mut flash, 1024, MODEL), None);
    let mut slots = Vec::new();
    for round in 0..5u8 {
        let data = payload(100 + round as usize * 150, round);
        let info = save(&mut flash, 1024, MODEL, &data);
        assert_eq!(info.header.sequence, round as u32 + 1);
        slots.push(info.slot);
        assert_eq!(load(&mut flash, 1024, MODEL), Some(data));
    }
    assert_eq!(slots, [0, 1, 0, 1, 0]);
}

#[test]
fn payload_parts_are_concatenated() {
    let mut flash = vec![0xFFu8; 2048];
    let mut sim = Flash::new(&mut flash);
    let mut store = CheckpointStore::new(&mut sim, 0, 1024).unwrap();
    let (a, b, c) = (payload(300, 1), payload(0, 2), payload(17, 3));
    store.save(MODEL, &[&a, &b, &c]).unwrap();
    let mut buf = [0u8; 400];
    let info = store.load(MODEL, &mut buf).unwrap().unwrap();
    assert_eq!(info.len(), 317);
    assert_eq!(&buf[..300], &a[..]);
    assert_eq!(&buf[300..317], &c[..]);
}

#[test]
fn checkpoints_of_another_model_are_never_returned() {
    let mut flash = vec![0xFFu8; 2048];
    save(&mut flash, 1024, OTHER, &payload(50, 9));
    assert_eq!(load(&mut flash, 1024, MODEL), None);
    let ours = payload(60, 1);
    let info = save(&mut flash, 1024, MODEL, &ours);
    assert_eq!(
        info.slot, 1,
        "the other model's checkpoint is kept while a slot is free"
    );
    assert_eq!(load(&mut flash, 1024, MODEL), Some(ours.clone()));
    assert_eq!(load(&mut flash, 1024, OTHER), Some(payload(50, 9)));
    // The next save of ours replaces the other model's slot, not our own.
    let newer = payload(70, 2);
    assert_eq!(save(&mut flash, 1024, MODEL, &newer).slot, 0);
    assert_eq!(load(&mut flash, 1024, MODEL), Some(newer));
    assert_eq!(load(&mut flash, 1024, OTHER), None);
}

#[test]
fn a_corrupt_newest_slot_falls_back_to_the_previous_checkpoint() {
    let mut flash = vec![0xFFu8; 2048];
    let old = payload(200, 1);
    save(&mut flash, 1024, MODEL, &old);
    let new = save(&mut flash, 1024, MODEL, &payload(200, 2));
    // A bit of the new payload flips (clearing a bit, as NOR wear does).
    let at = new.slot * 1024 + 32 + 100;
    flash[at] &= !0x04;
    assert_eq!(load(&mut flash, 1024, MODEL), Some(old));
    let mut sim = Flash::new(&mut flash);
    let mut store = CheckpointStore::new(&mut sim, 0, 1024).unwrap();
    let slots = store.slots().unwrap();
    assert_eq!(
        slots[new.slot],
        SlotStatus::Invalid(SlotProblem::PayloadChecksum)
    );
}

#[test]
fn sizes_and_geometry_are_checked() {
    let mut flash = vec![0xFFu8; 2048];
    let mut sim = Flash::new(&mut flash);
    let mut store = CheckpointStore::new(&mut sim, 0, 1024).unwrap();
    assert_eq!(store.capacity(), 1024 - 32);
    assert_eq!(
        store.save(MODEL, &[&[0; 1000]]),
        Err(StoreError::TooLarge {
            capacity: 992,
            len: 1000
        })
    );
    store.save(MODEL, &[&[7; 10]]).unwrap();
    assert_eq!(
        store.load(MODEL, &mut [0; 9]),
        Err(StoreError::BufferTooSmall {
            needed: 10,
            actual: 9
        })
    );
    for (start, slot) in [(0, 100), (128, 512), (0, 2048), (1024, 768)] {
        assert!(
            matches!(
                CheckpointStore::new(&mut sim, start, slot),
                Err(StoreError::Geometry(_))
            ),
            "start {start} slot {slot}"
        );
    }
    let mut bytes = [0xFFu8; 64];
    let mut tiny = SimulatedNorFlash::<64, 32>::new(&mut bytes);
    assert!(matches!(
        CheckpointStore::new(&mut tiny, 0, 32),
        Err(StoreError::Geometry(_))
    ));
}

#[test]
fn wide_flash_words_get_a_padded_header() {
    let mut flash = vec![0xFFu8; 4096];
    let mut sim = SimulatedNorFlash::<64, 1024>::new(&mut flash);
    let mut store = CheckpointStore::new(&mut sim, 0, 2048).unwrap();
    assert_eq!(store.capacity(), 2048 - 64);
    let data = payload(333, 5);
    store.save(MODEL, &[&data]).unwrap();
    let mut buf = [0u8; 333];
    store.load(MODEL, &mut buf).unwrap().unwrap();
    assert_eq!(&buf[..], &data[..]);
    assert_eq!(sim.rewrites(), 0);
}

/// Cuts power at every step of a save, for several flash geometries and payload sizes, with
/// clean and torn cuts.
fn sweep_all<const W: usize, const E: usize>(slot: u32) -> u32 {
    let mut cut_points = 0;
    for (old_len, new_len) in [(0, 1), (5, 300), (300, 5), (600, 600)] {
        if new_len.max(old_len) + W.max(32) > slot as usize {
            continue;
        }
        for torn in [false, true] {
            let mut flash = vec![0xFFu8; 2 * slot as usize];
            let mut backup = vec![0u8; flash.len()];
            let mut scratch = vec![0u8; slot as usize];
            {
                let mut sim = SimulatedNorFlash::<W, E>::new(&mut flash);
                let mut store = CheckpointStore::new(&mut sim, 0, slot).unwrap();
                // An older checkpoint in one slot and the current one in the other, so the
                // save must erase a valid slot.
                store.save(MODEL, &[&payload(old_len, 99)]).unwrap();
                store.save(MODEL, &[&payload(old_len, 1)]).unwrap();
            }
            let report = power_cut_sweep::<W, E>(
                &mut flash,
                &mut backup,
                slot,
                MODEL,
                &payload(old_len, 1),
                &payload(new_len, 2),
                torn,
                &mut scratch,
            )
            .unwrap_or_else(|f| panic!("W={W} E={E} {old_len}->{new_len} torn={torn}: {f:?}"));
            // The new checkpoint shows only once the header's bytes are all programmed: the
            // uncut save, plus the cuts that fall in the header's padding to a whole write
            // word, or on checksum bytes that happen to be 0xFF.
            let padding = W.max(32) - 32;
            assert!(
                (1..=padding as u32 + 4).contains(&report.recovered_new),
                "W={W} E={E} {old_len}->{new_len} torn={torn}: {report:?}"
            );
            assert_eq!(
                report.recovered_old + report.recovered_new,
                report.cut_points
            );
            cut_points += report.cut_points;
        }
    }
    cut_points
}

#[test]
fn every_power_cut_during_a_save_recovers_exactly_the_old_or_the_new_checkpoint() {
    let cut_points = sweep_all::<1, 256>(1024)
        + sweep_all::<4, 256>(1024)
        + sweep_all::<8, 1024>(1024)
        + sweep_all::<16, 512>(1024)
        + sweep_all::<32, 128>(768)
        + sweep_all::<256, 256>(1024);
    std::println!("power cuts tried: {cut_points}");
    assert!(cut_points > 10_000, "{cut_points}");
}

#[derive(Debug, Clone)]
enum Event {
    Save {
        len: usize,
        seed: u8,
    },
    CutSave {
        len: usize,
        seed: u8,
        at: u32,
        torn: bool,
    },
    FlipBit {
        slot: usize,
        byte: usize,
        bit: u8,
    },
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        (0usize..900, any::<u8>()).prop_map(|(len, seed)| Event::Save { len, seed }),
        (0usize..900, any::<u8>(), 0u32..1200, any::<bool>()).prop_map(|(len, seed, at, torn)| {
            Event::CutSave {
                len,
                seed,
                at,
                torn,
            }
        }),
        (0usize..2, 0usize..1024, 0u8..8).prop_map(|(slot, byte, bit)| Event::FlipBit {
            slot,
            byte,
            bit
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Random saves, power cuts and single-bit decay: what loads is always a checkpoint that
    /// was saved whole, the newest one that survived.
    #[test]
    fn random_saves_and_cuts_never_expose_a_partial_checkpoint(
        events in proptest::collection::vec(event(), 1..24)
    ) {
        let slot = 1024u32;
        let mut flash = vec![0xFFu8; 2 * slot as usize];
        // Checkpoints saved whole, oldest first; what loads must be one of them, and never one
        // older than a checkpoint that still loads.
        let mut saved: Vec<Vec<u8>> = Vec::new();
        let mut current: Option<Vec<u8>> = None;
        for event in events {
            match event {
                Event::Save { len, seed } => {
                    let data = payload(len, seed);
                    save(&mut flash, slot, MODEL, &data);
                    saved.push(data.clone());
                    current = Some(data);
                }
                Event::CutSave { len, seed, at, torn } => {
                    let data = payload(len, seed);
                    {
                        let cut = PowerCut { after_steps: at, torn };
                        let mut sim = Flash::with_power_cut(&mut flash, cut);
                        let mut store = CheckpointStore::new(&mut sim, 0, slot).unwrap();
                        let result = store.save(MODEL, &[&data]);
                        prop_assert_eq!(result.is_ok(), sim.is_powered());
                    }
                    let loaded = load(&mut flash, slot, MODEL);
                    prop_assert!(
                        loaded == current || loaded.as_ref() == Some(&data),
                        "after a cut at {}: neither the previous nor the attempted checkpoint", at
                    );
                    if loaded.as_ref() == Some(&data) {
                        saved.push(data);
                    }
                    current = loaded;
                }
                Event::FlipBit { slot: s, byte, bit } => {
                    flash[s * slot as usize + byte] &= !(1 << bit);
                    let loaded = load(&mut flash, slot, MODEL);
                    if let Some(l) = &loaded {
                        prop_assert!(saved.contains(l), "decay exposed a payload never saved");
                    }
                    current = loaded;
                }
            }
            prop_assert_eq!(load(&mut flash, slot, MODEL), current.clone());
        }
    }
}

proptest! {
    /// The fuzz target's property on random flash contents, so it runs in every test run.
    #[test]
    fn any_flash_contents_load_without_panic_and_take_a_new_save(
        data in proptest::collection::vec(any::<u8>(), 0..1100)
    ) {
        crate::fuzzing::exercise_checkpoint_store(&data);
    }
}
