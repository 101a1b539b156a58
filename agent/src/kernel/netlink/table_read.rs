//! Optional attributes read in one call: `t.read(Ty::Timeout, Attr::be32)?`.

use super::{Attr, AttrTable, DecodeError};

impl<'a, T: Into<u16>> AttrTable<'a, T> {
    /// The attribute of type `ty` read with `read` (`Attr::be32`, ...),
    /// or None when it is absent; a malformed value is an error.
    pub(crate) fn read<V>(
        &self,
        ty: T,
        read: impl FnOnce(&Attr<'a>) -> Result<V, DecodeError>,
    ) -> Result<Option<V>, DecodeError> {
        self.get(ty).as_ref().map(read).transpose()
    }
}
