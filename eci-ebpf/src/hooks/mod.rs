mod cgroup_mkdir;
mod d_instantiate;
mod file_receive;
mod inode_permission;
mod inode_rename;
mod unix_stream_connect;
