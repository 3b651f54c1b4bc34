//! Which rows of each image a layer computes its output at: all of them, or one per image — the
//! last layer of a tower, whose only use is the pooled token (the vision tower's class token,
//! the text tower's end-of-text token). Keys and values are still computed at every row, but
//! queries, the out-projection, the MLP, and their backward run on one row per image.

/// The output rows of a layer call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outputs<'a> {
    All,
    /// The position of the one row per image.
    Pooled(&'a [usize]),
}

impl Outputs<'_> {
    /// Output rows per image.
    pub fn per_image(&self, seq: usize) -> usize {
        match self {
            Outputs::All => seq,
            Outputs::Pooled(_) => 1,
        }
    }

    /// The position of image `image`'s first output row.
    pub fn first(&self, image: usize) -> usize {
        match self {
            Outputs::All => 0,
            Outputs::Pooled(rows) => rows[image],
        }
    }

    /// Token indices (into `[B·T]`) of every output row, in order.
    pub fn token_rows(&self, batch: usize, seq: usize) -> Vec<usize> {
        (0..batch)
            .flat_map(|b| {
                let first = b * seq + self.first(b);
                first..first + self.per_image(seq)
            })
            .collect()
    }
}
