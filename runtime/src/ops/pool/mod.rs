//! Placeholder until the module lands (replaced in this session).
use crate::error::{Error, OpProblem};
use crate::ops::{Ctx, Node, OpKind};

pub(crate) fn check(_kind: OpKind, _node: &Node<'_>) -> Result<(), OpProblem> {
    Err(OpProblem::UnknownKind)
}

pub(crate) fn run(_kind: OpKind, _ctx: &Ctx<'_, '_>) -> Result<(), Error> {
    Err(Error::CorruptModel)
}
