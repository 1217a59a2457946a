// Shared by the stream targets: the first byte picks a chunk size so that splits land
// everywhere, the rest is the stream.
use sluice::providers::native::StreamDecoder;

pub fn feed_in_chunks(data: &[u8], d: &mut dyn StreamDecoder) {
    let Some((&k, rest)) = data.split_first() else {
        return;
    };
    let size = usize::from(k % 64) + 1;
    let mut events = Vec::new();
    for chunk in rest.chunks(size) {
        if d.feed(chunk, &mut events).is_err() {
            return;
        }
    }
    let _ = d.finish(&mut events);
    let _ = sluice::canonical::ChatResponse::from_events(&events);
    // What we decoded must re-encode as OpenAI chunks without trouble.
    let mut enc = sluice::canonical::openai::StreamEncoder::new("id".into(), "m".into(), 0, true);
    let mut out = Vec::new();
    for e in &events {
        enc.event(e, &mut out);
    }
    enc.finish(&mut out);
}
