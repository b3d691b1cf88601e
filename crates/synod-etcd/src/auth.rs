//! etcd's Auth service: users, roles, permissions and tokens.
//!
//! Changes are commands of the replicated log, checked where they apply
//! (only the root role manages auth once it is on). Passwords are hashed
//! here with bcrypt before they are proposed, so the log and the disk hold
//! hashes only. Answers about users and roles are read after this member
//! caught up with the leader, so they show every change acknowledged
//! before them.

use crate::Sender;
use crate::{auth_status, EtcdApi};
use bytes::Bytes;
use synod_kv::auth::TOKEN_KEY_LEN;
use synod_kv::AuthError;
use synod_proto::etcdserverpb::auth_server::Auth;
use synod_proto::etcdserverpb::*;
use synod_proto::synodpb::{auth_write::Op as AuthOp, command::Op, outcome, AuthWrite};
use tonic::{Request, Response, Status};

impl EtcdApi {
    /// Proposes one auth change as `caller`.
    async fn auth_write(&self, op: AuthOp, caller: Sender) -> Result<(), Status> {
        let token_key = if matches!(op, AuthOp::Enable(_)) {
            let mut key = vec![0; TOKEN_KEY_LEN];
            getrandom::fill(&mut key)
                .map_err(|e| Status::internal(format!("no randomness for the token key: {e}")))?;
            Bytes::from(key)
        } else {
            Bytes::new()
        };
        let write = AuthWrite {
            op: Some(op),
            token_key,
        };
        match self.write(Op::Auth(write), &caller).await? {
            outcome::Result::Auth(_) => Ok(()),
            _ => Err(Status::internal("outcome does not match the request")),
        }
    }

    /// bcrypt at the configured cost, off the async threads (tens of
    /// milliseconds at etcd's default cost of 10).
    async fn hash_password(&self, password: String) -> Result<String, Status> {
        let cost = self.node.config().bcrypt_cost;
        tokio::task::spawn_blocking(move || bcrypt::hash(password, cost))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| Status::invalid_argument(format!("etcdserver: {e}")))
    }

    /// The hash to store: the client's own (etcd 3.5 clients may send
    /// one), else the password hashed here.
    async fn password_hash(&self, password: String, hashed: String) -> Result<String, Status> {
        if password.is_empty() && !hashed.is_empty() {
            return Ok(hashed);
        }
        self.hash_password(password).await
    }

    /// The auth store once this member caught up with the leader.
    async fn auth_now(&self) -> Result<std::sync::Arc<synod_kv::AuthStore>, Status> {
        self.catch_up().await?;
        Ok(self.node.auth())
    }
}

#[tonic::async_trait]
impl Auth for EtcdApi {
    async fn auth_enable(
        &self,
        request: Request<AuthEnableRequest>,
    ) -> Result<Response<AuthEnableResponse>, Status> {
        let caller = self.caller(&request)?;
        self.auth_write(AuthOp::Enable(AuthEnableRequest {}), caller)
            .await?;
        Ok(Response::new(AuthEnableResponse {
            header: self.header(0),
        }))
    }

    async fn auth_disable(
        &self,
        request: Request<AuthDisableRequest>,
    ) -> Result<Response<AuthDisableResponse>, Status> {
        let caller = self.caller(&request)?;
        self.auth_write(AuthOp::Disable(AuthDisableRequest {}), caller)
            .await?;
        Ok(Response::new(AuthDisableResponse {
            header: self.header(0),
        }))
    }

    async fn auth_status(
        &self,
        _: Request<AuthStatusRequest>,
    ) -> Result<Response<AuthStatusResponse>, Status> {
        let auth = self.auth_now().await?;
        Ok(Response::new(AuthStatusResponse {
            header: self.header(0),
            enabled: auth.enabled(),
            auth_revision: auth.revision(),
        }))
    }

    async fn authenticate(
        &self,
        request: Request<AuthenticateRequest>,
    ) -> Result<Response<AuthenticateResponse>, Status> {
        let r = request.into_inner();
        let mut auth = self.node.auth();
        if !auth.enabled() || auth.user(&r.name).is_none() {
            // Enabled, or the user added, through another member a moment
            // ago: look again once caught up.
            auth = self.auth_now().await?;
        }
        if !auth.enabled() {
            return Err(auth_status(AuthError::AuthNotEnabled));
        }
        let failed = || auth_status(AuthError::AuthFailed);
        let user = auth.user(&r.name).ok_or_else(failed)?;
        let no_password = user.options.as_ref().is_some_and(|o| o.no_password);
        if no_password || user.password.is_empty() {
            return Err(failed());
        }
        let hash = String::from_utf8(user.password.to_vec()).map_err(|_| failed())?;
        let password = r.password;
        let matches = tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .unwrap_or(false);
        if !matches {
            return Err(failed());
        }
        let token = self.tokens.issue(&auth, &r.name).map_err(auth_status)?;
        Ok(Response::new(AuthenticateResponse {
            header: self.header(0),
            token,
        }))
    }

    async fn user_add(
        &self,
        request: Request<AuthUserAddRequest>,
    ) -> Result<Response<AuthUserAddResponse>, Status> {
        let caller = self.caller(&request)?;
        let mut r = request.into_inner();
        if r.name.is_empty() {
            return Err(auth_status(AuthError::UserEmpty));
        }
        let no_password = r.options.as_ref().is_some_and(|o| o.no_password);
        let password = std::mem::take(&mut r.password);
        r.hashed_password = if no_password {
            String::new()
        } else {
            let hashed = std::mem::take(&mut r.hashed_password);
            self.password_hash(password, hashed).await?
        };
        self.auth_write(AuthOp::UserAdd(r), caller).await?;
        Ok(Response::new(AuthUserAddResponse {
            header: self.header(0),
        }))
    }

    async fn user_get(
        &self,
        request: Request<AuthUserGetRequest>,
    ) -> Result<Response<AuthUserGetResponse>, Status> {
        let caller = self.caller(&request)?;
        let name = request.into_inner().name;
        let auth = self.auth_now().await?;
        // Admins, and every user about itself.
        if name != caller.user {
            auth.check_admin(&caller.user).map_err(auth_status)?;
        }
        let user = auth
            .user(&name)
            .ok_or_else(|| auth_status(AuthError::UserNotFound))?;
        Ok(Response::new(AuthUserGetResponse {
            header: self.header(0),
            roles: user.roles.clone(),
        }))
    }

    async fn user_list(
        &self,
        request: Request<AuthUserListRequest>,
    ) -> Result<Response<AuthUserListResponse>, Status> {
        let caller = self.caller(&request)?;
        let auth = self.auth_now().await?;
        auth.check_admin(&caller.user).map_err(auth_status)?;
        Ok(Response::new(AuthUserListResponse {
            header: self.header(0),
            users: auth.user_names(),
        }))
    }

    async fn user_delete(
        &self,
        request: Request<AuthUserDeleteRequest>,
    ) -> Result<Response<AuthUserDeleteResponse>, Status> {
        let caller = self.caller(&request)?;
        self.auth_write(AuthOp::UserDelete(request.into_inner()), caller)
            .await?;
        Ok(Response::new(AuthUserDeleteResponse {
            header: self.header(0),
        }))
    }

    async fn user_change_password(
        &self,
        request: Request<AuthUserChangePasswordRequest>,
    ) -> Result<Response<AuthUserChangePasswordResponse>, Status> {
        let caller = self.caller(&request)?;
        let mut r = request.into_inner();
        let password = std::mem::take(&mut r.password);
        let hashed = std::mem::take(&mut r.hashed_password);
        r.hashed_password = self.password_hash(password, hashed).await?;
        self.auth_write(AuthOp::UserChangePassword(r), caller)
            .await?;
        Ok(Response::new(AuthUserChangePasswordResponse {
            header: self.header(0),
        }))
    }

    async fn user_grant_role(
        &self,
        request: Request<AuthUserGrantRoleRequest>,
    ) -> Result<Response<AuthUserGrantRoleResponse>, Status> {
        let caller = self.caller(&request)?;
        self.auth_write(AuthOp::UserGrantRole(request.into_inner()), caller)
            .await?;
        Ok(Response::new(AuthUserGrantRoleResponse {
            header: self.header(0),
        }))
    }

    async fn user_revoke_role(
        &self,
        request: Request<AuthUserRevokeRoleRequest>,
    ) -> Result<Response<AuthUserRevokeRoleResponse>, Status> {
        let caller = self.caller(&request)?;
        self.auth_write(AuthOp::UserRevokeRole(request.into_inner()), caller)
            .await?;
        Ok(Response::new(AuthUserRevokeRoleResponse {
            header: self.header(0),
        }))
    }

    async fn role_add(
        &self,
        request: Request<AuthRoleAddRequest>,
    ) -> Result<Response<AuthRoleAddResponse>, Status> {
        let caller = self.caller(&request)?;
        self.auth_write(AuthOp::RoleAdd(request.into_inner()), caller)
            .await?;
        Ok(Response::new(AuthRoleAddResponse {
            header: self.header(0),
        }))
    }

    async fn role_get(
        &self,
        request: Request<AuthRoleGetRequest>,
    ) -> Result<Response<AuthRoleGetResponse>, Status> {
        let caller = self.caller(&request)?;
        let role = request.into_inner().role;
        let auth = self.auth_now().await?;
        // Admins, and every user about its own roles.
        if !auth.has_role(&caller.user, &role) {
            auth.check_admin(&caller.user).map_err(auth_status)?;
        }
        let perm = auth.role_permissions(&role).map_err(auth_status)?;
        Ok(Response::new(AuthRoleGetResponse {
            header: self.header(0),
            perm,
        }))
    }

    async fn role_list(
        &self,
        request: Request<AuthRoleListRequest>,
    ) -> Result<Response<AuthRoleListResponse>, Status> {
        let caller = self.caller(&request)?;
        let auth = self.auth_now().await?;
        auth.check_admin(&caller.user).map_err(auth_status)?;
        Ok(Response::new(AuthRoleListResponse {
            header: self.header(0),
            roles: auth.role_names(),
        }))
    }

    async fn role_delete(
        &self,
        request: Request<AuthRoleDeleteRequest>,
    ) -> Result<Response<AuthRoleDeleteResponse>, Status> {
        let caller = self.caller(&request)?;
        self.auth_write(AuthOp::RoleDelete(request.into_inner()), caller)
            .await?;
        Ok(Response::new(AuthRoleDeleteResponse {
            header: self.header(0),
        }))
    }

    async fn role_grant_permission(
        &self,
        request: Request<AuthRoleGrantPermissionRequest>,
    ) -> Result<Response<AuthRoleGrantPermissionResponse>, Status> {
        let caller = self.caller(&request)?;
        self.auth_write(AuthOp::RoleGrantPermission(request.into_inner()), caller)
            .await?;
        Ok(Response::new(AuthRoleGrantPermissionResponse {
            header: self.header(0),
        }))
    }

    async fn role_revoke_permission(
        &self,
        request: Request<AuthRoleRevokePermissionRequest>,
    ) -> Result<Response<AuthRoleRevokePermissionResponse>, Status> {
        let caller = self.caller(&request)?;
        self.auth_write(AuthOp::RoleRevokePermission(request.into_inner()), caller)
            .await?;
        Ok(Response::new(AuthRoleRevokePermissionResponse {
            header: self.header(0),
        }))
    }
}
