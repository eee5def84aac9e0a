//! Who a deployment is for. One rule serves deployment creation and late joiners alike
//! ([`select`]): the target's filters pick devices by their labels ([`resolve`]), then each
//! picked device is checked against the application's placement and what is deployed
//! ([`fit`]).
//!
//! A device that has not reported an inventory has no labels (filters see it as unlabelled,
//! explicit ids and static group members still pick it). It cannot be shown to satisfy a
//! placement, so an application with a placement does not go to it (reason "placement: ...
//! no inventory"); without a placement it fits, because the agent re-checks the artifact's
//! type, platforms and requirements against its own inventory before installing and reports
//! the app failed with the reason. Once it reports an inventory, the driver looks at it again
//! as a late joiner of every deployment whose target grows (a group, selector or expressions;
//! an explicit list never grows).

pub mod fit;
pub mod late_joiners;
pub mod resolve;
pub mod select;

pub use fit::{unfit_reason, Release, Unfit};
pub use late_joiners::{late_joiners, Joiners};
pub use resolve::{group_members, matching, resolve, resolve_with_group, TargetError};
pub use select::{select, Selection};
