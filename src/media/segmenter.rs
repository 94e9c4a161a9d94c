//! GOP segmentation. (Being written.)
