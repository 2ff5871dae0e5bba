//! What the fuzz target does with each input, shared with the test that replays its seeds and
//! past crashes, so both exercise exactly the same path.

use alloc::vec;

use crate::format::{AlignedBytes, Model, PREAMBLE_LEN, checksum};
use crate::interpreter::Interpreter;

/// Loads `data` as a model (with the CRC written in, since a fuzzer cannot forge checksums
/// and the interesting validation lies behind that test), checks its plan and, if the arena
/// is modest, runs it. Must never panic.
pub fn exercise(data: &[u8]) {
    let mut bytes = data.to_vec();
    if bytes.len() >= PREAMBLE_LEN {
        let file_len = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize;
        if file_len <= bytes.len() {
            let crc = checksum(&bytes[..file_len]);
            bytes[24..28].copy_from_slice(&crc.to_le_bytes());
        }
    }
    let aligned = AlignedBytes::new(&bytes);
    let Ok(model) = Model::from_bytes(&aligned) else {
        return;
    };
    let _ = model.check_plan();
    // Running is bounded by the arena the file asks for; keep it small enough to stay fast.
    if model.arena_size() <= 1 << 16 {
        invoke_both_ways(&model);
    }
}

/// Runs a loaded model once per interpreter mode, ignoring errors (a damaged model may
/// fail cleanly, never panic): decoding each record as the ops run, and with the records
/// kept decoded in an arena of [`Interpreter::arena_size_with_records`].
pub fn invoke_both_ways(model: &Model<'_>) {
    for size in [
        model.arena_size() + 16,
        Interpreter::arena_size_with_records(model),
    ] {
        let mut arena = vec![0u8; size];
        if let Ok(mut interpreter) = Interpreter::new(model, &mut arena) {
            let _ = interpreter.invoke();
        }
    }
}

/// Treats `data` as the contents of a checkpoint region (two 512-byte slots, header checksums
/// fixed up so that the payload checks are reached) and runs the store over it: inspecting
/// and loading must not panic, and a save must then load back exactly. Panics only on a bug.
pub fn exercise_checkpoint_store(data: &[u8]) {
    use crate::store::sim::SimulatedNorFlash;
    use crate::store::{CheckpointStore, HEADER_LEN, ModelId, decode_image, payload_crc};

    const SLOT: usize = 512;
    let _ = decode_image(data);
    let mut flash = vec![0xFFu8; 2 * SLOT];
    let n = data.len().min(flash.len());
    flash[..n].copy_from_slice(&data[..n]);
    for slot in flash.chunks_mut(SLOT) {
        let crc = payload_crc(&[&slot[..HEADER_LEN - 4]]);
        slot[HEADER_LEN - 4..HEADER_LEN].copy_from_slice(&crc.to_le_bytes());
    }
    let model = ModelId(u64::from_le_bytes(
        flash[16..24].try_into().unwrap_or([0; 8]),
    ));
    let mut sim = SimulatedNorFlash::<4, 128>::new(&mut flash);
    let Ok(mut store) = CheckpointStore::new(&mut sim, 0, SLOT as u32) else {
        panic!("fixed geometry refused");
    };
    let _ = store.slots();
    let mut buf = vec![0u8; store.capacity()];
    let _ = store.load(model, &mut buf);
    let payload = &data[..data.len().min(store.capacity())];
    store
        .save(model, &[payload])
        .expect("save on a healthy flash");
    let info = store.load(model, &mut buf).expect("load").expect("saved");
    assert_eq!(&buf[..info.len()], payload);
}
