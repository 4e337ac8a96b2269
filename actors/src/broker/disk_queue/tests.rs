//! Tests of the disk queue: FIFO, recovery, corruption, the cap, and a model test.
