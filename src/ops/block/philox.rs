//! Dropout masks from a counter-based generator (Philox4x32-10, Salmon et al., "Parallel random
//! numbers: as easy as 1, 2, 3", 2011): the keep decision for element `i` of a mask is a pure
//! function of `(seed, step, layer, projection, i)`. Any backend, any thread order, any rerun
//! draws the same bits — so a CUDA step can be checked against a CPU step with dropout on, and a
//! resumed run draws the masks the uninterrupted one would have.

const M0: u32 = 0xD251_1F53;
const M1: u32 = 0xCD9E_8D57;
const W0: u32 = 0x9E37_79B9;
const W1: u32 = 0xBB67_AE85;
const ROUNDS: usize = 10;

/// Philox4x32 with 10 rounds: four 32-bit words from a 128-bit counter and a 64-bit key.
pub fn philox4x32(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let (mut c, mut k) = (counter, key);
    for round in 0..ROUNDS {
        if round > 0 {
            k = [k[0].wrapping_add(W0), k[1].wrapping_add(W1)];
        }
        let p0 = u64::from(M0) * u64::from(c[0]);
        let p1 = u64::from(M1) * u64::from(c[2]);
        let (hi0, lo0) = ((p0 >> 32) as u32, p0 as u32);
        let (hi1, lo1) = ((p1 >> 32) as u32, p1 as u32);
        c = [hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0];
    }
    c
}

/// Generator calls per vectorised block: sixteen 32-bit lanes fill one AVX-512 register (two
/// AVX2 ones).
const LANES: usize = 16;

/// [`philox4x32`] for `LANES` counters `(lo[l], hi[l], c2, c3)` at once, written lane-wise so
/// the compiler turns each round into vector multiplies (`vpmuludq`) when the caller enables
/// AVX2 or AVX-512: the same words as `LANES` calls of [`philox4x32`].
#[inline(always)]
fn philox_lanes(
    lo: [u32; LANES],
    hi: [u32; LANES],
    c2: u32,
    c3: u32,
    key: [u32; 2],
) -> [[u32; LANES]; 4] {
    let mut c = [lo, hi, [c2; LANES], [c3; LANES]];
    let mut k = key;
    for round in 0..ROUNDS {
        if round > 0 {
            k = [k[0].wrapping_add(W0), k[1].wrapping_add(W1)];
        }
        let mut next = [[0u32; LANES]; 4];
        for l in 0..LANES {
            let p0 = u64::from(M0) * u64::from(c[0][l]);
            let p1 = u64::from(M1) * u64::from(c[2][l]);
            next[0][l] = (p1 >> 32) as u32 ^ c[1][l] ^ k[0];
            next[1][l] = p1 as u32;
            next[2][l] = (p0 >> 32) as u32 ^ c[3][l] ^ k[1];
            next[3][l] = p0 as u32;
        }
        c = next;
    }
    c
}

/// Which dropout stream a mask belongs to. One training step draws one mask per layer and per
/// adapted projection (q, k, v); the seed is the run's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DropoutKey {
    pub seed: u64,
    pub step: u64,
}

/// The stream of one projection's mask in one layer: elements are counted row-major over the
/// `[tokens, channels]` input of that projection.
#[derive(Clone, Copy, Debug)]
pub struct MaskStream {
    key: [u32; 2],
    layer_projection: u32,
    step: u32,
    /// Keep when the 24-bit uniform is at least this (`⌈p · 2²⁴⌉`).
    threshold: u32,
}

impl MaskStream {
    /// `p` is the drop probability, in `[0, 1)`.
    pub fn new(key: DropoutKey, layer: usize, projection: usize, p: f32) -> Self {
        let threshold = (f64::from(p) * f64::from(1u32 << 24)).ceil() as u32;
        Self {
            key: [key.seed as u32, (key.seed >> 32) as u32],
            layer_projection: (layer as u32) << 2 | projection as u32,
            step: key.step as u32,
            threshold,
        }
    }

    /// The generator's third counter word: `layer << 2 | projection`.
    pub fn layer_projection(&self) -> u32 {
        self.layer_projection
    }

    /// Keep an element when the top 24 bits of its word are at least this.
    pub fn threshold(&self) -> u32 {
        self.threshold
    }

    /// Keep decisions for elements `4q .. 4q + 4` (one generator call).
    pub fn keep4(&self, quad: u64) -> [bool; 4] {
        let words = philox4x32(
            [
                quad as u32,
                (quad >> 32) as u32,
                self.layer_projection,
                self.step,
            ],
            self.key,
        );
        words.map(|w| (w >> 8) >= self.threshold)
    }

    /// Fill `keep` with the decisions for elements `start .. start + keep.len()`.
    pub fn fill(&self, start: u64, keep: &mut [bool]) {
        let mut done = 0;
        while done < keep.len() {
            let at = start + done as u64;
            let word = (at % 4) as usize;
            let take = (4 - word).min(keep.len() - done);
            let quad = self.keep4(at / 4);
            keep[done..done + take].copy_from_slice(&quad[word..word + take]);
            done += take;
        }
    }

    /// `dst[i] = scale · src[i]` where element `start + i` of the stream is kept, 0 where it is
    /// dropped: the dropout applied in one pass, with no mask stored. The same decisions as
    /// [`MaskStream::fill`], drawn `LANES` generator calls at a time.
    pub fn apply(&self, start: u64, src: &[f32], scale: f32, dst: &mut [f32]) {
        assert_eq!(
            src.len(),
            dst.len(),
            "dropout: source and destination lengths"
        );
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F (checked just above), all `apply_avx512` requires.
            unsafe { self.apply_avx512(start, src, scale, dst) };
            return;
        }
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2 (checked just above), all `apply_avx2` requires.
            unsafe { self.apply_avx2(start, src, scale, dst) };
            return;
        }
        self.apply_body(start, src, scale, dst);
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    fn apply_avx512(&self, start: u64, src: &[f32], scale: f32, dst: &mut [f32]) {
        self.apply_body(start, src, scale, dst);
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn apply_avx2(&self, start: u64, src: &[f32], scale: f32, dst: &mut [f32]) {
        self.apply_body(start, src, scale, dst);
    }

    /// Elements one at a time up to a whole generator call, then `4 · LANES` at a time, then the
    /// rest one at a time.
    #[inline(always)]
    fn apply_body(&self, start: u64, src: &[f32], scale: f32, dst: &mut [f32]) {
        let head = (((4 - start % 4) % 4) as usize).min(src.len());
        self.apply_one_by_one(start, 0..head, src, scale, dst);
        let block = 4 * LANES;
        let mut done = head;
        while src.len() - done >= block {
            let first = (start + done as u64) / 4;
            let quads: [u64; LANES] = std::array::from_fn(|l| first + l as u64);
            let words = philox_lanes(
                quads.map(|q| q as u32),
                quads.map(|q| (q >> 32) as u32),
                self.layer_projection,
                self.step,
                self.key,
            );
            let (src, dst) = (&src[done..done + block], &mut dst[done..done + block]);
            for l in 0..LANES {
                for (j, word) in words.iter().enumerate() {
                    let keep = (word[l] >> 8) >= self.threshold;
                    dst[4 * l + j] = if keep { src[4 * l + j] * scale } else { 0.0 };
                }
            }
            done += block;
        }
        self.apply_one_by_one(start, done..src.len(), src, scale, dst);
    }

    /// [`MaskStream::apply`] over `range` of the slices, one decision at a time.
    fn apply_one_by_one(
        &self,
        start: u64,
        range: std::ops::Range<usize>,
        src: &[f32],
        scale: f32,
        dst: &mut [f32],
    ) {
        for i in range {
            let at = start + i as u64;
            let keep = self.keep4(at / 4)[(at % 4) as usize];
            dst[i] = if keep { src[i] * scale } else { 0.0 };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The known-answer vectors published with Random123 (kat_vectors, philox4x32_10).
    #[test]
    fn known_answers() {
        assert_eq!(
            philox4x32([0, 0, 0, 0], [0, 0]),
            [0x6627_e8d5, 0xe169_c58d, 0xbc57_ac4c, 0x9b00_dbd8]
        );
        assert_eq!(
            philox4x32([u32::MAX; 4], [u32::MAX; 2]),
            [0x408f_276d, 0x41c8_3b0e, 0xa20b_c7c6, 0x6d54_51fd]
        );
        assert_eq!(
            philox4x32(
                [0x243f_6a88, 0x85a3_08d3, 0x1319_8a2e, 0x0370_7344],
                [0xa409_3822, 0x299f_31d0]
            ),
            [0xd16c_fe09, 0x94fd_cceb, 0x5001_e420, 0x2412_6ea1]
        );
    }

    /// The first keep decisions of one stream, as kernels/dropout.cu's mapping gives them (its
    /// generator and element mapping compiled as host code): pins the mapping both sides share.
    #[test]
    fn the_stream_mapping_matches_the_kernels() {
        let stream = MaskStream::new(DropoutKey { seed: 7, step: 3 }, 5, 1, 0.8);
        let mut keep = [false; 16];
        stream.fill(0, &mut keep);
        let shown: String = keep.iter().map(|&k| if k { '1' } else { '0' }).collect();
        assert_eq!(shown, "0000000000110000");
    }

    /// The one-pass dropout keeps exactly the elements the stream keeps, from any start and for
    /// any length (the unaligned head, whole blocks, the tail).
    #[test]
    fn apply_keeps_what_the_stream_keeps() {
        let stream = MaskStream::new(DropoutKey { seed: 9, step: 2 }, 3, 2, 0.6);
        for (start, len) in [
            (0u64, 0usize),
            (0, 3),
            (1, 70),
            (2, 64),
            (3, 200),
            (0, 1000),
            ((1 << 34) - 6, 90),
        ] {
            let src: Vec<f32> = (0..len).map(|i| 1.0 + i as f32).collect();
            let mut keep = vec![false; len];
            stream.fill(start, &mut keep);
            let want: Vec<f32> = src
                .iter()
                .zip(&keep)
                .map(|(v, k)| if *k { v * 2.5 } else { 0.0 })
                .collect();
            let mut got = vec![f32::NAN; len];
            stream.apply(start, &src, 2.5, &mut got);
            assert_eq!(got, want, "start {start}, length {len}");
        }
    }

    #[test]
    fn the_keep_share_matches_the_probability() {
        let key = DropoutKey { seed: 7, step: 3 };
        let stream = MaskStream::new(key, 5, 1, 0.8);
        let mut keep = vec![false; 400_000];
        stream.fill(0, &mut keep);
        let share = keep.iter().filter(|k| **k).count() as f64 / keep.len() as f64;
        assert!((share - 0.2).abs() < 0.003, "kept {share}");
        let other = MaskStream::new(key, 5, 2, 0.8);
        let mut keep2 = vec![false; 400_000];
        other.fill(0, &mut keep2);
        assert_ne!(keep, keep2, "projections draw different masks");
        // Any start, aligned or not, reads the same stream.
        let mut part = vec![false; 11];
        stream.fill(5, &mut part);
        assert_eq!(part, keep[5..16]);
    }
}
