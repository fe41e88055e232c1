mod cgroup_mkdir;
mod d_instantiate;
mod file_receive;
mod inode_rename;
mod unix_may_send;
mod unix_stream_connect;
