//! Segment store. (Being written.)
