//! Is a JPEG file whole? Decoders fill whatever a cut-short file lacks with grey and report
//! success, so a file cut to half its bytes would be scored as if it were an image. We walk the
//! file's marker structure (segments with their lengths, entropy-coded scans up to the next
//! marker) and call it truncated when the data ends before the end-of-image marker.

/// Where a JPEG stops being whole, as a reason for the user; `Ok` for a complete file.
pub fn check_complete(bytes: &[u8]) -> Result<(), String> {
    let truncated = |at: usize, what: &str| {
        Err(format!(
            "truncated JPEG: the data ends {what} (after {at} of the bytes a whole file has; \
             pass --allow-truncated to score such files anyway)"
        ))
    };
    if bytes.len() < 2 || bytes[..2] != [0xFF, 0xD8] {
        return Err("not a JPEG stream (no start-of-image marker)".into());
    }
    let mut at = 2;
    loop {
        // A marker: 0xFF (any number of fill bytes), then its code.
        if at >= bytes.len() || bytes[at] != 0xFF {
            return match at >= bytes.len() {
                true => truncated(at, "before the end-of-image marker"),
                false => Err(format!("corrupt JPEG: no marker at byte {at}")),
            };
        }
        while at < bytes.len() && bytes[at] == 0xFF {
            at += 1;
        }
        let Some(&code) = bytes.get(at) else {
            return truncated(at, "inside a marker");
        };
        at += 1;
        match code {
            0xD9 => return Ok(()),
            // Markers without a payload.
            0x01 | 0xD0..=0xD8 => continue,
            _ => {}
        }
        let Some(len) = bytes
            .get(at..at + 2)
            .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
        else {
            return truncated(at, "inside a segment header");
        };
        if len < 2 {
            return Err(format!("corrupt JPEG: segment length {len} at byte {at}"));
        }
        at += len;
        if at > bytes.len() {
            return truncated(bytes.len(), "inside a segment");
        }
        if code == 0xDA {
            match end_of_scan(bytes, at) {
                Some(next) => at = next,
                None => return truncated(bytes.len(), "inside the compressed image data"),
            }
        }
    }
}

/// The offset of the first marker after entropy-coded data starting at `from` (stuffed `FF 00`
/// bytes and restart markers belong to the data), or `None` when the file ends first.
fn end_of_scan(bytes: &[u8], from: usize) -> Option<usize> {
    let mut at = from;
    while at + 1 < bytes.len() {
        if bytes[at] == 0xFF {
            match bytes[at + 1] {
                0x00 | 0xD0..=0xD7 => at += 1,
                _ => return Some(at),
            }
        }
        at += 1;
    }
    None
}
