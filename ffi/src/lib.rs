//! C ABI of the Hornbeam engine (work in progress).
