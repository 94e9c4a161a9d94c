//! ISO BMFF box writing: init segments and fragments. (Being written.)
