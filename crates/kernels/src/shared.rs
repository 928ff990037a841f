//! A raw pointer that rayon tasks share to write disjoint parts of one buffer.

/// A pointer into a buffer that several threads write at once, each its own elements.
///
/// Rust's borrows cannot say "task `i` writes rows `i * n .. (i + 1) * n`" when the rows are
/// strided or the split is computed inside the task; this wrapper carries the pointer into
/// such tasks. Every use is `unsafe`: the caller promises that no two tasks touch the same
/// element and that every offset stays inside the buffer.
#[derive(Debug)]
pub struct SharedMut<T>(*mut T);

impl<T> Clone for SharedMut<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for SharedMut<T> {}

// SAFETY: the wrapper only moves the address between threads; every dereference is an
// `unsafe` call whose caller guarantees disjoint access (see the type's documentation).
unsafe impl<T: Send> Send for SharedMut<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Sync for SharedMut<T> {}

impl<T> SharedMut<T> {
    /// Wraps the start of `buf`.
    pub fn new(buf: &mut [T]) -> Self {
        SharedMut(buf.as_mut_ptr())
    }

    /// Wraps a raw pointer (for buffers that are not slices here).
    pub fn from_ptr(ptr: *mut T) -> Self {
        SharedMut(ptr)
    }

    /// The pointer `offset` elements in.
    ///
    /// # Safety
    /// `offset` is inside the buffer the pointer came from (or one past its end).
    pub unsafe fn at(self, offset: usize) -> *mut T {
        // SAFETY: the caller keeps `offset` inside the allocation.
        unsafe { self.0.add(offset) }
    }

    /// `len` elements from `offset` as a slice that this task alone writes.
    ///
    /// # Safety
    /// The range is inside the buffer, and no other live reference (in this or another
    /// task) overlaps it.
    pub unsafe fn slice<'a>(self, offset: usize, len: usize) -> &'a mut [T] {
        // SAFETY: the caller's promise of bounds and exclusivity.
        unsafe { std::slice::from_raw_parts_mut(self.0.add(offset), len) }
    }
}
