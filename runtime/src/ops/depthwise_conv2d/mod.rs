//! Placeholder until the module lands (replaced in this session).
use crate::error::{Error, OpProblem};
use crate::ops::{Ctx, Node};

pub(crate) fn check(_node: &Node<'_>) -> Result<(), OpProblem> {
    Err(OpProblem::UnknownKind)
}

pub(crate) fn run(_ctx: &Ctx<'_, '_>) -> Result<(), Error> {
    Err(Error::CorruptModel)
}

pub(crate) fn scratch_bytes(_node: &Node<'_>) -> Result<usize, OpProblem> {
    Ok(0)
}
