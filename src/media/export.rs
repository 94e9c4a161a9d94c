//! MP4 export. (Being written.)
