//! Nested attributes written as a closure, so a nest cannot be left open.

use super::Writer;

impl Writer<'_> {
    /// Writes what `inner` writes inside a nest of type `ty`. The caller
    /// keeps it under `NLA_MAX_LEN`.
    pub(crate) fn nested(&mut self, ty: impl Into<u16>, inner: impl FnOnce(&mut Self)) {
        let at = self.nest_start(ty);
        inner(self);
        self.nest_end(at);
    }
}
